//! Resource quantities (`500m`, `1.5Gi`, `2e3`), compared in thousandths as upstream's
//! `resource.Quantity` compares them (rounded up).

/// A quantity in thousandths of its unit (`1` = 1000, `100m` = 100, `1Ki` = 1_024_000).
pub fn milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    // Mantissa as an integer with a decimal exponent.
    let (neg, digits) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(c.to_digit(10)? as i128)?;
    }
    let mut exp10: i32 = -(frac.len() as i32) + 3; // in thousandths
    let mut mul: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => mul = 1 << 10,
        "Mi" => mul = 1 << 20,
        "Gi" => mul = 1 << 30,
        "Ti" => mul = 1 << 40,
        "Pi" => mul = 1 << 50,
        "Ei" => mul = 1 << 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(mul)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp10) as u32)?;
        v = (v + d - 1) / d; // round up, as upstream's MilliValue
    }
    Some(if neg { -v } else { v })
}

/// Writes thousandths back as a quantity, in binary units when `like` (the limit it is compared
/// with) uses them, as upstream keeps a sum in its first operand's format.
pub fn format(milli: i128, like: &str) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let v = milli / 1000;
    let binary = like.ends_with('i');
    if binary && v != 0 {
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let unit = 1i128 << shift;
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
        return v.to_string();
    }
    let decimal_suffix = like.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if v != 0 && matches!(decimal_suffix, "k" | "M" | "G" | "T" | "P" | "E") {
        for (suffix, exp) in [
            ("E", 18),
            ("P", 15),
            ("T", 12),
            ("G", 9),
            ("M", 6),
            ("k", 3),
        ] {
            let unit = 10i128.pow(exp);
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_in_thousandths() {
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("1Ki"), Some(1_024_000));
        assert_eq!(milli("1Gi"), Some(1_073_741_824_000));
        assert_eq!(milli("2k"), Some(2_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("1n"), Some(1));
        assert_eq!(milli("x"), None);
        assert_eq!(milli("1Q"), None);
        assert_eq!(format(500, "1"), "500m");
        assert_eq!(format(2000, "1"), "2");
        assert_eq!(format(1_610_612_736_000, "2Gi"), "1536Mi");
        assert_eq!(format(2_000_000, "5k"), "2k");
    }
}
