//! Task-level `cpu` and `memory` strings as ECS accepts them: CPU units
//! (`"1024"`) or vCPUs (`"1 vCPU"`, `"0.5 vcpu"`), memory in MiB (`"512"`) or
//! GB (`"1 GB"`, `"2GB"`), and the Fargate size table. Pure parsing; the
//! stored definition keeps the string exactly as sent.

use crate::error::ApiError;

/// Which task-level setting a string belongs to (for units and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskUnit {
    Cpu,
    Memory,
}

impl TaskUnit {
    fn name(self) -> &'static str {
        match self {
            TaskUnit::Cpu => "cpu",
            TaskUnit::Memory => "memory",
        }
    }
}

/// Lowest and highest task CPU ECS accepts (0.125 to 192 vCPU).
pub const TASK_CPU_MIN: u32 = 128;
pub const TASK_CPU_MAX: u32 = 196_608;
/// Lowest task memory Berth accepts: one container's minimum.
pub const TASK_MEMORY_MIN: u32 = 6;
/// Highest task memory: 120 GiB is the Fargate ceiling; EC2 instances may be
/// larger, so allow up to what fits in the model's 32-bit integers.
pub const TASK_MEMORY_MAX: u32 = i32::MAX as u32;

/// Parses a task-level `cpu` or `memory` string into CPU units or MiB.
pub fn parse_task_unit(raw: &str, unit: TaskUnit) -> Result<u32, ApiError> {
    let invalid =
        |why: &str| ApiError::client(format!("Invalid '{}' setting for task. {why}", unit.name()));
    let text = raw.trim();
    let lower = text.to_ascii_lowercase();
    let (number, scale) = match unit {
        TaskUnit::Cpu => match strip_any_suffix(&lower, &["vcpus", "vcpu"]) {
            Some(n) => (n, 1024.0),
            None => (lower.as_str(), 1.0),
        },
        TaskUnit::Memory => {
            if let Some(n) = strip_any_suffix(&lower, &["gib", "gb"]) {
                (n, 1024.0)
            } else if let Some(n) = strip_any_suffix(&lower, &["mib", "mb"]) {
                (n, 1.0)
            } else {
                (lower.as_str(), 1.0)
            }
        }
    };
    let number = number.trim();
    let plain = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|c| *c == '.').count() <= 1;
    if !plain {
        return Err(invalid(&format!("'{raw}' is not a number.")));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| invalid(&format!("'{raw}' is not a number.")))?;
    let scaled = value * scale;
    if scaled.fract() != 0.0 || !scaled.is_finite() {
        return Err(invalid(&format!(
            "'{raw}' is not a whole number of {}.",
            match unit {
                TaskUnit::Cpu => "CPU units",
                TaskUnit::Memory => "MiB",
            }
        )));
    }
    let (min, max) = match unit {
        TaskUnit::Cpu => (TASK_CPU_MIN, TASK_CPU_MAX),
        TaskUnit::Memory => (TASK_MEMORY_MIN, TASK_MEMORY_MAX),
    };
    if scaled < f64::from(min) || scaled > f64::from(max) {
        return Err(invalid(&format!(
            "Supported values are between {min} and {max}{}.",
            match unit {
                TaskUnit::Cpu => " CPU units",
                TaskUnit::Memory => " MiB",
            }
        )));
    }
    // In range, so the cast is exact.
    Ok(scaled as u32)
}

fn strip_any_suffix<'a>(s: &'a str, suffixes: &[&str]) -> Option<&'a str> {
    suffixes.iter().find_map(|suffix| s.strip_suffix(suffix))
}

/// Whether `n` is a whole number of `step`s.
fn steps_of(n: u32, step: u32) -> bool {
    n / step * step == n
}

/// Whether (cpu units, MiB) is one of the sizes Fargate offers.
pub fn fargate_size_ok(cpu: u32, memory: u32) -> bool {
    let gib = |n: u32| n * 1024;
    match cpu {
        256 => matches!(memory, 512 | 1024 | 2048),
        512 => (gib(1)..=gib(4)).contains(&memory) && steps_of(memory, 1024),
        1024 => (gib(2)..=gib(8)).contains(&memory) && steps_of(memory, 1024),
        2048 => (gib(4)..=gib(16)).contains(&memory) && steps_of(memory, 1024),
        4096 => (gib(8)..=gib(30)).contains(&memory) && steps_of(memory, 1024),
        8192 => (gib(16)..=gib(60)).contains(&memory) && steps_of(memory, gib(4)),
        16384 => (gib(32)..=gib(120)).contains(&memory) && steps_of(memory, gib(8)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_units_parse_as_ecs_documents_them() {
        let cases: &[(&str, TaskUnit, Option<u32>)] = &[
            ("256", TaskUnit::Cpu, Some(256)),
            ("1024", TaskUnit::Cpu, Some(1024)),
            ("1 vCPU", TaskUnit::Cpu, Some(1024)),
            ("1 vcpu", TaskUnit::Cpu, Some(1024)),
            ("2vCPU", TaskUnit::Cpu, Some(2048)),
            ("0.25 vCPU", TaskUnit::Cpu, Some(256)),
            ("4 vcpus", TaskUnit::Cpu, Some(4096)),
            ("1028", TaskUnit::Cpu, Some(1028)),
            ("127", TaskUnit::Cpu, None),
            ("196609", TaskUnit::Cpu, None),
            ("0.001 vCPU", TaskUnit::Cpu, None),
            ("abc", TaskUnit::Cpu, None),
            ("", TaskUnit::Cpu, None),
            ("-256", TaskUnit::Cpu, None),
            ("1e3", TaskUnit::Cpu, None),
            ("256.5", TaskUnit::Cpu, None),
            ("512", TaskUnit::Memory, Some(512)),
            ("1 GB", TaskUnit::Memory, Some(1024)),
            ("1GB", TaskUnit::Memory, Some(1024)),
            ("2 gb", TaskUnit::Memory, Some(2048)),
            ("0.5 GB", TaskUnit::Memory, Some(512)),
            ("3 GiB", TaskUnit::Memory, Some(3072)),
            ("64 MiB", TaskUnit::Memory, Some(64)),
            ("64", TaskUnit::Memory, Some(64)),
            ("5", TaskUnit::Memory, None),
            ("1 TB", TaskUnit::Memory, None),
            ("1 vCPU", TaskUnit::Memory, None),
            ("1 GB", TaskUnit::Cpu, None),
            ("NaN", TaskUnit::Memory, None),
        ];
        for (raw, unit, expected) in cases {
            let got = parse_task_unit(raw, *unit);
            match expected {
                Some(v) => assert_eq!(got.as_ref().ok(), Some(v), "{raw} as {unit:?}: {got:?}"),
                None => {
                    let err = got.expect_err(raw);
                    assert!(err
                        .message
                        .contains(&format!("Invalid '{}' setting for task", unit.name())));
                }
            }
        }
    }

    #[test]
    fn fargate_sizes_follow_the_published_table() {
        let cases: &[(u32, u32, bool)] = &[
            (256, 512, true),
            (256, 2048, true),
            (256, 3072, false),
            (512, 1024, true),
            (512, 4096, true),
            (512, 512, false),
            (1024, 2048, true),
            (1024, 8192, true),
            (1024, 1024, false),
            (2048, 16384, true),
            (4096, 30720, true),
            (4096, 31744, false),
            (8192, 16384, true),
            (8192, 17408, false),
            (16384, 122880, true),
            (16384, 40960, true),
            (16384, 36864, false),
            (128, 512, false),
            (1028, 2048, false),
        ];
        for (cpu, mem, ok) in cases {
            assert_eq!(fargate_size_ok(*cpu, *mem), *ok, "{cpu} CPU, {mem} MiB");
        }
    }
}
