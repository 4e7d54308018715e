//! Numbers and names as the eviction warnings print them, for people reading a log.

/// `1 GiB`, `9.8 MiB`, `512 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `/ecs/web, /ecs/api`, or the first few and how many more: a warning names the groups
/// without becoming a page long.
pub(crate) fn names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..SHOWN].join(", "),
        names.len() - SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_sizes_and_counts_for_people() {
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(bytes(10_276_045), "9.8 MiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(count(12_345), "12,345");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
        let many: Vec<String> = (0..12).map(|i| format!("g{i}")).collect();
        assert!(names(&many).ends_with("g9 and 2 more"));
    }
}
