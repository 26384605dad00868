//! AWS Signature Version 4 verification of API requests against the admin
//! credentials.
//!
//! Implemented by hand with `hmac` + `sha2` rather than `aws-sigv4`: the signer
//! in `aws-sigv4` chooses which headers to sign itself, while a verifier must
//! recompute the signature over exactly the `SignedHeaders` the client chose.
//! The tests sign with `aws-sigv4` (what the AWS SDKs use) and verify here.
//!
//! Errors follow AWS: no `Authorization` → `MissingAuthenticationTokenException`;
//! malformed → `IncompleteSignatureException`; unknown key →
//! `UnrecognizedClientException`; wrong signature, wrong service scope, or more
//! than 15 minutes of clock skew → `InvalidSignatureException`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::error::{ApiError, ErrorKind};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// An access key pair the coordinator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// What a verified request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// Region of the credential scope; used in ARNs.
    pub region: String,
}

/// The parts of a request that SigV4 covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Raw path as sent (percent-encoded).
    pub path: &'a str,
    /// Raw query string (without `?`), empty if none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn incomplete(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::IncompleteSignatureException, msg)
}

fn invalid_signature(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidSignatureException, msg)
}

struct AuthHeader<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<AuthHeader<'_>, ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| incomplete(format!("Unsupported algorithm; expected {ALGORITHM}.")))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |name: &str| {
        incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|part| part.is_empty()) {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid region, service and terminated by 'aws4_request'. Credential={credential}"
        )));
    }
    Ok(AuthHeader {
        access_key_id: scope[0],
        date: scope[1],
        region: scope[2],
        service: scope[3],
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Percent-encodes as SigV4 requires: unreserved characters kept, `/` kept
/// when `keep_slash`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hi = (bytes[i + 1] as char).to_digit(16);
            let lo = (bytes[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            let s = String::from_utf8_lossy(v.as_bytes());
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(","))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn fmt_amz(t: OffsetDateTime) -> String {
    t.format(AMZ_DATE).unwrap_or_default()
}

/// Verifies `req` was signed with one of `keys` for `service` (any service
/// when `None`), within 15 minutes of `now`.
pub fn verify(
    req: &SignedRequest<'_>,
    keys: &[AccessKey],
    service: Option<&str>,
    now: SystemTime,
) -> Result<Verified, ApiError> {
    let auth = match req.headers.get(http::header::AUTHORIZATION) {
        Some(v) => v,
        None => {
            return Err(ApiError::new(
                ErrorKind::MissingAuthenticationTokenException,
                "Missing Authentication Token",
            ))
        }
    };
    let auth = auth
        .to_str()
        .map_err(|_| incomplete("Authorization header is not valid ASCII."))?;
    let auth = parse_authorization(auth)?;

    let key = keys
        .iter()
        .find(|k| {
            bool::from(
                k.access_key_id
                    .as_bytes()
                    .ct_eq(auth.access_key_id.as_bytes()),
            )
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::UnrecognizedClientException,
                "The security token included in the request is invalid.",
            )
        })?;

    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        })?;
    let signed_at = PrimitiveDateTime::parse(amz_date, AMZ_DATE)
        .map_err(|_| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
            ))
        })?
        .assume_utc();
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date),
            amz_date
        )));
    }
    if let Some(service) = service.filter(|s| *s != auth.service) {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    let now_dt = OffsetDateTime::from_unix_timestamp(
        now.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let skew = time::Duration::try_from(MAX_SKEW).unwrap_or(time::Duration::minutes(15));
    if signed_at < now_dt - skew {
        return Err(invalid_signature(format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            amz_date,
            fmt_amz(now_dt - skew),
            fmt_amz(now_dt)
        )));
    }
    if signed_at > now_dt + skew {
        return Err(invalid_signature(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            amz_date,
            fmt_amz(now_dt + skew),
            fmt_amz(now_dt)
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(invalid_signature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }

    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        // A signed header that is absent cannot verify; an empty value keeps the
        // computation going so the result is a signature mismatch.
        let value = canonical_header_value(req.headers, name).unwrap_or_default();
        canonical_headers.push_str(&name.to_ascii_lowercase());
        canonical_headers.push(':');
        canonical_headers.push_str(&value);
        canonical_headers.push('\n');
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(if req.path.is_empty() { "/" } else { req.path }, true),
        canonical_query(req.query),
        canonical_headers,
        auth.signed_headers.join(";"),
        hex::encode(Sha256::digest(req.body)),
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", key.secret_access_key).as_bytes(),
        auth.date.as_bytes(),
    );
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let expected = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(Verified {
        access_key_id: key.access_key_id.clone(),
        region: auth.region.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn keys() -> Vec<AccessKey> {
        vec![AccessKey {
            access_key_id: AKID.into(),
            secret_access_key: SECRET.into(),
        }]
    }

    /// Signs a request the way the AWS SDKs do.
    fn signed(
        akid: &str,
        secret: &str,
        service: &str,
        at: SystemTime,
        body: &[u8],
    ) -> http::Request<Vec<u8>> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8080/")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.ListClusters",
            )
            .body(body.to_vec())
            .unwrap();
        let identity = Credentials::new(akid, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-3")
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:8080/",
            req.headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
        req
    }

    fn check(req: &http::Request<Vec<u8>>, now: SystemTime) -> Result<Verified, ApiError> {
        verify(
            &SignedRequest {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
                headers: req.headers(),
                body: req.body(),
            },
            &keys(),
            Some("ecs"),
            now,
        )
    }

    fn kind(r: Result<Verified, ApiError>) -> Option<ErrorKind> {
        r.err().map(|e| e.kind)
    }

    #[test]
    fn verification_table() {
        let now = SystemTime::now();
        let body = br#"{"maxResults": 10}"#;
        let good = signed(AKID, SECRET, "ecs", now, body);
        assert_eq!(
            check(&good, now).unwrap(),
            Verified {
                access_key_id: AKID.into(),
                region: "eu-west-3".into()
            }
        );

        let mut tampered_body = good.clone();
        tampered_body.body_mut()[3] ^= 1;
        let mut tampered_header = good.clone();
        tampered_header.headers_mut().insert(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DeleteCluster"
                .parse()
                .unwrap(),
        );
        let mut tampered_sig = good.clone();
        let auth = tampered_sig.headers()["authorization"].to_str().unwrap();
        let last = auth.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &auth[..auth.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        tampered_sig
            .headers_mut()
            .insert("authorization", flipped.parse().unwrap());
        let mut unsigned = good.clone();
        unsigned.headers_mut().remove("authorization");
        let mut garbled = good.clone();
        garbled.headers_mut().insert(
            "authorization",
            "AWS4-HMAC-SHA256 nonsense".parse().unwrap(),
        );

        type Case = (
            &'static str,
            http::Request<Vec<u8>>,
            SystemTime,
            Option<ErrorKind>,
        );
        let table: Vec<Case> = vec![
            ("good", good.clone(), now, None),
            (
                "tampered body",
                tampered_body,
                now,
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "tampered signed header",
                tampered_header,
                now,
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "tampered signature",
                tampered_sig,
                now,
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "wrong secret",
                signed(AKID, "not-the-secret", "ecs", now, body),
                now,
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "unknown key",
                signed("AKIDUNKNOWN", SECRET, "ecs", now, body),
                now,
                Some(ErrorKind::UnrecognizedClientException),
            ),
            (
                "wrong service scope",
                signed(AKID, SECRET, "ssm", now, body),
                now,
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "16 minutes old",
                good.clone(),
                now + Duration::from_secs(16 * 60),
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "14 minutes old",
                good.clone(),
                now + Duration::from_secs(14 * 60),
                None,
            ),
            (
                "16 minutes ahead",
                good,
                now - Duration::from_secs(16 * 60),
                Some(ErrorKind::InvalidSignatureException),
            ),
            (
                "unsigned",
                unsigned,
                now,
                Some(ErrorKind::MissingAuthenticationTokenException),
            ),
            (
                "garbled",
                garbled,
                now,
                Some(ErrorKind::IncompleteSignatureException),
            ),
        ];
        for (name, req, at, want) in table {
            assert_eq!(kind(check(&req, at)), want, "case {name}");
        }
    }

    #[test]
    fn expired_message_matches_aws() {
        let now = SystemTime::now();
        let req = signed(AKID, SECRET, "ecs", now, b"{}");
        let err = check(&req, now + Duration::from_secs(3600)).unwrap_err();
        assert!(
            err.message.starts_with("Signature expired:"),
            "{}",
            err.message
        );
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b=2&a=x%20y&c"), "a=x%20y&b=2&c=");
        assert_eq!(uri_encode("/a b/", true), "/a%20b/");
    }
}
