//! Tables for the cluster query language: every operator over every subject,
//! the boolean connectives and their precedence, the canonical printing, and
//! the position and wording of every kind of syntax error.

use super::*;

/// 2018-06-18T22:28:28Z.
const REGISTERED: f64 = 1_529_360_908.0;

fn facts() -> Facts {
    let mut attributes = BTreeMap::new();
    attributes.insert("ecs.os-type".to_string(), Some("linux".to_string()));
    attributes.insert(
        "ecs.instance-type".to_string(),
        Some("t2.small".to_string()),
    );
    attributes.insert("stack".to_string(), Some("prod".to_string()));
    attributes.insert("cores".to_string(), Some("8".to_string()));
    attributes.insert("gpu".to_string(), None);
    Facts {
        agent_connected: true,
        agent_version: "1.10.2".into(),
        ec2_instance_id: "i-0abc".into(),
        registered_at: REGISTERED,
        running_tasks_count: 3,
        attributes,
        task_groups: vec!["family:web".into(), "service:api".into()],
    }
}

/// An instance with nothing known but its registration time.
fn bare() -> Facts {
    Facts {
        registered_at: REGISTERED,
        ..Facts::default()
    }
}

fn check(table: &[(&str, bool)], f: &Facts) {
    for (expr, want) in table {
        let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        assert_eq!(eval(&e, f), *want, "{expr}");
    }
}

#[test]
fn agent_connected_every_operator() {
    check(
        &[
            ("agentConnected == true", true),
            ("agentConnected equals false", false),
            ("agentConnected != false", true),
            ("agentConnected not_equals true", false),
            ("agentConnected exists", true),
            ("agentConnected !exists", false),
            ("agentConnected not_exists", false),
            ("agentConnected in [true]", true),
            ("agentConnected in [false, no]", false),
            ("agentConnected !in [false]", true),
            ("agentConnected not_in [true]", false),
            ("agentConnected =~ t.*", true),
            ("agentConnected matches f.*", false),
            ("agentConnected !~ f.*", true),
            ("agentConnected not_matches tr.e", false),
            // Ordered as text, as ECS orders strings.
            ("agentConnected > false", true),
            ("agentConnected >= true", true),
            ("agentConnected < true", false),
            ("agentConnected <= true", true),
        ],
        &facts(),
    );
    check(&[("agentConnected == false", true)], &bare());
}

#[test]
fn agent_version_every_operator() {
    check(
        &[
            ("agentVersion == 1.10.2", true),
            ("agentVersion == 1.10", false),
            ("agentVersion equals '1.10.2'", true),
            ("agentVersion != 1.9.0", true),
            ("agentVersion not_equals 1.10.2", false),
            ("agentVersion exists", true),
            ("agentVersion !exists", false),
            ("agentVersion in [1.10.2, 1.9.0]", true),
            ("agentVersion !in [1.10.2]", false),
            ("agentVersion not_in [1.9.0]", true),
            ("agentVersion =~ 1\\.10\\..*", true),
            ("agentVersion !~ 1\\.10\\..*", false),
            ("agentVersion not_matches 2\\..*", true),
            // Dotted numbers, not text: 1.10 is newer than 1.9.
            ("agentVersion > 1.9.9", true),
            ("agentVersion greater_than v1.10.1", true),
            ("agentVersion >= 1.10.2", true),
            ("agentVersion greater_than_equal 1.10.3", false),
            ("agentVersion < 1.10.10", true),
            ("agentVersion less_than 1.10.2", false),
            ("agentVersion <= 1.2", false),
            ("agentVersion less_than_equal 1.10.2", true),
        ],
        &facts(),
    );
    check(
        &[
            ("agentVersion exists", false),
            ("agentVersion !exists", true),
            ("agentVersion > 0.0.1", false),
            ("agentVersion < 99", false),
        ],
        &bare(),
    );
}

#[test]
fn attribute_every_operator() {
    check(
        &[
            ("attribute:stack == prod", true),
            ("attribute:stack equals dev", false),
            ("attribute:stack != dev", true),
            ("attribute:stack not_equals prod", false),
            ("attribute:stack exists", true),
            ("attribute:stack !exists", false),
            ("attribute:stack not_exists", false),
            ("attribute:stack in [dev, prod]", true),
            ("attribute:stack in []", false),
            ("attribute:stack !in [dev]", true),
            ("attribute:stack not_in [prod]", false),
            ("attribute:ecs.instance-type =~ t2.*", true),
            ("attribute:ecs.instance-type matches 'g2.*'", false),
            // Full match, not a search.
            ("attribute:ecs.instance-type =~ t2", false),
            ("attribute:ecs.instance-type !~ g2.*", true),
            ("attribute:ecs.instance-type not_matches t2.*", false),
            // Numbers compare as numbers (text would say "8" > "10").
            ("attribute:cores > 4", true),
            ("attribute:cores > 10", false),
            ("attribute:cores >= 8", true),
            ("attribute:cores >= 8.0", true),
            ("attribute:cores < 10", true),
            ("attribute:cores <= 7.5", false),
            // Text compares as text.
            ("attribute:stack > pra", true),
            ("attribute:stack < prod", false),
            ("attribute:stack <= prod", true),
            ("attribute:stack >= zzz", false),
            // A value-less attribute exists and equals, matches and orders
            // against nothing.
            ("attribute:gpu exists", true),
            ("attribute:gpu !exists", false),
            ("attribute:gpu == ''", false),
            ("attribute:gpu != x", true),
            ("attribute:gpu =~ .*", false),
            ("attribute:gpu !~ .*", true),
            ("attribute:gpu in ['']", false),
            ("attribute:gpu !in ['']", true),
            ("attribute:gpu > 0", false),
            ("attribute:gpu <= 0", false),
            // An absent attribute: nothing holds but the negations.
            ("attribute:missing exists", false),
            ("attribute:missing !exists", true),
            ("attribute:missing == x", false),
            ("attribute:missing != x", true),
            ("attribute:missing in [x]", false),
            ("attribute:missing !in [x]", true),
            ("attribute:missing =~ .*", false),
            ("attribute:missing !~ .*", true),
            ("attribute:missing < 5", false),
            ("attribute:missing >= 5", false),
        ],
        &facts(),
    );
}

#[test]
fn ec2_instance_id_every_operator() {
    check(
        &[
            ("ec2InstanceId == i-0abc", true),
            ("ec2InstanceId equals i-0abd", false),
            ("ec2InstanceId != i-1", true),
            ("ec2InstanceId not_equals i-0abc", false),
            ("ec2InstanceId exists", true),
            ("ec2InstanceId !exists", false),
            ("ec2InstanceId in ['i-0abc', 'i-wxyx7890']", true),
            ("ec2InstanceId in [\"i-1\", \"i-2\"]", false),
            ("ec2InstanceId !in [i-1]", true),
            ("ec2InstanceId not_in [i-0abc]", false),
            ("ec2InstanceId =~ i-0.*", true),
            ("ec2InstanceId !~ i-0.*", false),
            ("ec2InstanceId > i-0", true),
            ("ec2InstanceId >= i-0abc", true),
            ("ec2InstanceId < i-0abc", false),
            ("ec2InstanceId <= i-1", true),
        ],
        &facts(),
    );
    check(
        &[
            ("ec2InstanceId exists", false),
            ("ec2InstanceId not_exists", true),
            ("ec2InstanceId == ''", true),
        ],
        &bare(),
    );
}

#[test]
fn registered_at_every_operator_and_date_format() {
    check(
        &[
            // A bare date is the whole UTC day.
            ("registeredAt == 2018-06-18", true),
            ("registeredAt == 2018-06-17", false),
            // Every documented timestamp format, to the second.
            ("registeredAt == 2018-06-18T22:28:28Z", true),
            ("registeredAt == 2018-06-18T22:28:28+00:00", true),
            ("registeredAt == 2018-06-18T23:28:28+01:00", true),
            ("registeredAt == 2018-06-18T22:28:28", true),
            ("registeredAt == 2018-06-18T22:28:29Z", false),
            ("registeredAt != 2018-06-17", true),
            ("registeredAt not_equals 2018-06-18", false),
            ("registeredAt exists", true),
            ("registeredAt !exists", false),
            ("registeredAt in [2018-06-17, 2018-06-18]", true),
            ("registeredAt !in [2018-06-18]", false),
            ("registeredAt not_in [2019-01-01]", true),
            ("registeredAt =~ 2018-06-18T.*", true),
            ("registeredAt matches '2018-06-18T22:28:28Z'", true),
            ("registeredAt !~ 2019.*", true),
            ("registeredAt > 2018-06-17", true),
            ("registeredAt > 2018-06-18", false),
            ("registeredAt >= 2018-06-18", true),
            ("registeredAt < 2018-06-19", true),
            ("registeredAt < 2018-06-18", false),
            ("registeredAt <= 2018-06-18", true),
            ("registeredAt > 2018-06-18T22:28:27Z", true),
            ("registeredAt < 2018-06-18T22:28:28Z", false),
            ("registeredAt <= 2018-06-18T22:28:28Z", true),
            ("registeredAt less_than 2016-02-01", false),
            ("registeredAt greater_than_equal 2016-02-01T00:00:00", true),
        ],
        &facts(),
    );
    // Fractions of a second fall inside their second.
    let mut f = facts();
    f.registered_at = REGISTERED + 0.75;
    check(
        &[
            ("registeredAt == 2018-06-18T22:28:28Z", true),
            ("registeredAt > 2018-06-18T22:28:28Z", false),
        ],
        &f,
    );
}

#[test]
fn running_tasks_count_every_operator() {
    check(
        &[
            ("runningTasksCount == 3", true),
            ("runningTasksCount equals 0", false),
            ("runningTasksCount != 3", false),
            ("runningTasksCount not_equals 4", true),
            ("runningTasksCount exists", true),
            ("runningTasksCount !exists", false),
            ("runningTasksCount in [1, 3]", true),
            ("runningTasksCount !in [0]", true),
            ("runningTasksCount not_in [3]", false),
            ("runningTasksCount =~ [0-3]", true),
            ("runningTasksCount !~ 3", false),
            // Numbers, not text ("3" > "10" as text).
            ("runningTasksCount > 2", true),
            ("runningTasksCount > 10", false),
            ("runningTasksCount >= 3", true),
            ("runningTasksCount < 3", false),
            ("runningTasksCount <= 3", true),
            ("runningTasksCount greater_than_equal 4", false),
            ("runningTasksCount less_than 10", true),
        ],
        &facts(),
    );
    check(&[("runningTasksCount == 0", true)], &bare());
}

#[test]
fn task_group_every_operator() {
    check(
        &[
            ("task:group == service:api", true),
            ("task:group == service:db", false),
            ("task:group != service:db", true),
            // `!=` holds only when no task's group equals.
            ("task:group != family:web", false),
            ("task:group exists", true),
            ("task:group !exists", false),
            ("task:group in [service:db, family:web]", true),
            ("task:group !in [service:db]", true),
            ("task:group not_in [service:api]", false),
            ("task:group =~ service:.*", true),
            ("task:group !~ service:.*", false),
            ("task:group not_matches db.*", true),
            ("task:group > family:a", true),
            ("task:group < a", false),
            ("not(task:group == database)", true),
        ],
        &facts(),
    );
    check(
        &[
            ("task:group exists", false),
            ("task:group !exists", true),
            ("task:group != x", true),
            ("task:group == x", false),
        ],
        &bare(),
    );
}

#[test]
fn connectives_precedence_and_parentheses() {
    // T: attribute:stack == prod (true); F: attribute:stack == dev (false).
    check(
        &[
            ("attribute:stack == prod and attribute:ecs.os-type == windows", false),
            ("attribute:stack == prod && runningTasksCount == 3", true),
            ("attribute:stack == dev or runningTasksCount == 3", true),
            ("attribute:stack == dev || runningTasksCount == 4", false),
            ("not attribute:stack == prod", false),
            ("! attribute:stack == dev", true),
            ("!attribute:stack == dev", true),
            ("!attribute:gpu exists", false),
            ("!(attribute:stack == dev)", true),
            ("not(attribute:stack == dev)", true),
            ("not not attribute:stack == prod", true),
            // and binds tighter than or: T or (F and F) = T; (T or F) and F = F.
            ("attribute:stack == prod or attribute:stack == dev and attribute:stack == dev", true),
            ("(attribute:stack == prod or attribute:stack == dev) and attribute:stack == dev", false),
            // not binds tighter than and: (not T) and F = F; not (T and F) = T.
            ("not attribute:stack == prod and attribute:stack == dev", false),
            ("not (attribute:stack == prod and attribute:stack == dev)", true),
            ("attribute:stack == prod && (attribute:ecs.os-type == windows || runningTasksCount < 5)", true),
            ("((attribute:stack == prod))", true),
            // Patterns may hold brackets and balanced parentheses.
            ("(attribute:ecs.instance-type =~ (t2|m5)\\..* or attribute:stack == dev)", true),
            ("(attribute:ecs.instance-type =~ [a-s][0-9].*)", false),
            ("attribute:stack == 'prod'", true),
            ("attribute:stack == \"prod\"", true),
            // Keywords in value position are values.
            ("attribute:stack != and", true),
            ("attribute:ecs.instance-type =~ t2.* and attribute:ecs.os-type in [linux, windows]", true),
        ],
        &facts(),
    );
}

#[test]
fn printing_is_canonical_and_shows_grouping() {
    let table = [
        (
            "attribute:a == 1 or attribute:b == 2 and attribute:c == 3",
            "attribute:a == 1 or attribute:b == 2 and attribute:c == 3",
        ),
        (
            "(attribute:a == 1 or attribute:b == 2) and attribute:c == 3",
            "(attribute:a == 1 or attribute:b == 2) and attribute:c == 3",
        ),
        (
            "attribute:a == 1 and (attribute:b == 2 and attribute:c == 3)",
            "attribute:a == 1 and (attribute:b == 2 and attribute:c == 3)",
        ),
        (
            "attribute:a == 1 && attribute:b == 2 && attribute:c == 3",
            "attribute:a == 1 and attribute:b == 2 and attribute:c == 3",
        ),
        (
            "! attribute:a equals 1 || not (attribute:b exists)",
            "not attribute:a == 1 or not attribute:b exists",
        ),
        ("!attribute:a not_exists", "not attribute:a !exists"),
        (
            "not (attribute:a == 1 or attribute:b == 2)",
            "not (attribute:a == 1 or attribute:b == 2)",
        ),
        (
            "task:group not_in ['a b',x,\"it's\"]",
            "task:group !in ['a b', x, it's]",
        ),
        ("attribute:x matches 'a(b|c)'", "attribute:x =~ 'a(b|c)'"),
        (
            "(attribute:x =~ (a|b)[0-9]+)",
            "attribute:x =~ '(a|b)[0-9]+'",
        ),
        ("not(attribute:x !~ a.*)", "not attribute:x !~ a.*"),
        (
            "registeredAt greater_than_equal 2018-06-18",
            "registeredAt >= 2018-06-18",
        ),
        ("attribute:x == ''", "attribute:x == ''"),
    ];
    for (input, want) in table {
        let e = parse(input).unwrap_or_else(|err| panic!("{input}: {err}"));
        assert_eq!(e.to_string(), want, "{input}");
        assert_eq!(parse(want).unwrap(), e, "{want} reads back");
    }
}

#[test]
fn syntax_errors_name_the_position() {
    // (input, 1-based position, message)
    let table: &[(&str, usize, &str)] = &[
        ("", 1, "the expression is empty"),
        ("   ", 1, "the expression is empty"),
        ("attribute:tier gold", 16, "expected an operator after 'attribute:tier', found 'gold'"),
        ("attribute:stack", 16, "expected an operator after 'attribute:stack', found the end of the expression"),
        ("attribute:stack ~~ prod", 17, "expected an operator after 'attribute:stack', found '~~'"),
        ("bogus == 1", 1, "unknown subject 'bogus'; expected attribute:NAME, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount or task:group"),
        ("attribute: == x", 1, "expected an attribute name after 'attribute:'"),
        ("attribute:a == 1 and == 2", 22, "unknown subject '=='"),
        ("(attribute:stack == prod", 25, "expected ')' to close the '(' at position 1, found the end of the expression"),
        ("attribute:a == b and (attribute:c == d or ]", 43, "expected a subject (attribute:NAME, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount or task:group), found ']'"),
        ("attribute:stack == prod and", 28, "expected a subject"),
        ("not", 4, "expected a subject"),
        ("attribute:stack in [a b]", 23, "expected ',' or ']' after 'a', found 'b'"),
        ("attribute:stack in [a,]", 23, "expected a value in the list, found ']'"),
        ("attribute:stack in [a", 22, "expected ',' or ']' after 'a', found the end of the expression"),
        ("attribute:stack in a", 20, "expected '[' after 'in', found 'a'"),
        ("attribute:stack not_in", 23, "expected '[' after 'not_in', found the end of the expression"),
        ("attribute:stack =~ )", 20, "expected a pattern after '=~', found ')'"),
        ("attribute:stack =~ (", 20, "invalid regular expression '(': unclosed group"),
        ("attribute:stack =~ 'a('", 20, "invalid regular expression 'a(': unclosed group"),
        ("attribute:stack == 'prod", 20, "unterminated quoted value: no closing ' before the end of the expression"),
        ("attribute:stack ==", 19, "expected a value after '==', found the end of the expression"),
        ("attribute:stack equals )", 24, "expected a value after 'equals', found ')'"),
        ("runningTasksCount > many", 21, "expected a whole number, found 'many'"),
        ("runningTasksCount in [1, -2]", 26, "expected a whole number, found '-2'"),
        ("registeredAt < yesterday", 16, "expected a date (2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, 2018-06-18T22:28:28 or 2018-06-18), found 'yesterday'"),
        ("registeredAt == 2018-13-01", 17, "expected a date"),
        ("agentVersion > latest", 16, "expected a version such as 1.2.3, found 'latest'"),
        ("attribute:a == b)", 17, "found ')' without a matching '('"),
        ("attribute:a == b c", 18, "expected 'and', 'or' or the end of the expression, found 'c'"),
        ("attribute:a == b (", 18, "expected 'and', 'or' or the end of the expression, found '('"),
        // Positions count characters, not bytes.
        ("attribute:é == x y", 18, "found 'y'"),
    ];
    for (input, position, message) in table {
        let err = parse(input).expect_err(input);
        assert_eq!(err.position(), Some(*position), "{input}: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("Invalid expression at position {position}: ")),
            "{input}: {text}"
        );
        assert!(text.contains(message), "{input}: {text} lacks {message}");
    }
}

#[test]
fn limits() {
    // Exactly 2000 characters parse; 2001 do not.
    let name = "a".repeat(MAX_LEN - "attribute: exists".len());
    let at_limit = format!("attribute:{name} exists");
    assert_eq!(at_limit.chars().count(), MAX_LEN);
    assert!(parse(&at_limit).is_ok());
    let over = format!("attribute:{name}a exists");
    assert_eq!(
        parse(&over),
        Err(CqlError::TooLong {
            length: MAX_LEN + 1
        })
    );
    assert_eq!(
        parse(&over).unwrap_err().to_string(),
        "Invalid expression: it is 2001 characters long; the maximum is 2000."
    );
    // The limit counts characters: 2000 two-byte characters are allowed.
    let wide = format!("attribute:{} exists", "é".repeat(MAX_LEN - 17));
    assert!(wide.len() > MAX_LEN);
    assert!(parse(&wide).is_ok());
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}attribute:a exists{}", "(".repeat(500), ")".repeat(500));
    let err = parse(&deep).unwrap_err();
    assert!(
        err.to_string().contains("nests deeper than 100 levels"),
        "{err}"
    );
    assert_eq!(err.position(), Some(MAX_DEPTH + 1));
    // A long token is shortened in the message.
    let long = format!("attribute:a == b {}", "c".repeat(500));
    let err = parse(&long).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!("found '{}...'", "c".repeat(60))),
        "{err}"
    );
    let nots = format!("{}attribute:a exists", "not ".repeat(200));
    assert!(parse(&nots).is_err());
    let fine = format!("{}attribute:a exists{}", "(".repeat(50), ")".repeat(50));
    assert!(parse(&fine).is_ok());
}

#[test]
fn dates() {
    let table: &[(&str, Option<(i64, i64)>)] = &[
        (
            "2018-06-18T22:28:28+00:00",
            Some((1_529_360_908, 1_529_360_909)),
        ),
        ("2018-06-18T22:28:28Z", Some((1_529_360_908, 1_529_360_909))),
        ("2018-06-18T22:28:28", Some((1_529_360_908, 1_529_360_909))),
        (
            "2018-06-19T00:28:28+02:00",
            Some((1_529_360_908, 1_529_360_909)),
        ),
        ("2018-06-18", Some((1_529_280_000, 1_529_366_400))),
        ("2018-06-31", None),
        ("18-06-2018", None),
        ("1529360908", None),
        ("", None),
    ];
    for (s, want) in table {
        assert_eq!(parse_date(s), *want, "{s}");
    }
}
