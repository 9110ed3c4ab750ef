//! Scalars as kubectl reads them: YAML 1.1 resolution the way go-yaml v2
//! does it, then the JSON form sigs.k8s.io/yaml gives values and map keys.

use serde_json::Value;

/// Prefix of the YAML core tags, such as `tag:yaml.org,2002:int` for `!!int`.
const CORE: &str = "tag:yaml.org,2002:";

/// A scalar after resolution, with the types go-yaml v2 gives it when it
/// decodes into `interface{}`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

/// Names the core type of a resolved scalar, as the `!!` tags spell it.
fn type_name(scalar: &Scalar) -> &'static str {
    match scalar {
        Scalar::Null => "null",
        Scalar::Bool(_) => "bool",
        Scalar::Int(_) | Scalar::Uint(_) => "int",
        Scalar::Float(_) => "float",
        Scalar::Str(_) => "str",
    }
}

/// Resolves one scalar. `plain` is false for quoted and block scalars,
/// which are always strings unless tagged; `tag` is the full tag, if any.
pub(super) fn resolve(text: &str, plain: bool, tag: Option<&str>) -> Result<Scalar, String> {
    let Some(tag) = tag else {
        return Ok(if plain {
            resolve_plain(text)
        } else {
            Scalar::Str(text.to_string())
        });
    };
    match tag.strip_prefix(CORE) {
        Some("str") => Ok(Scalar::Str(text.to_string())),
        Some("binary") => decode_base64(text).map(Scalar::Str),
        Some("timestamp") if looks_like_timestamp(text) => Ok(Scalar::Str(text.to_string())),
        Some(expected @ ("bool" | "int" | "float" | "null" | "timestamp")) => {
            resolve_tagged(text, expected)
        }
        // Other tags, such as local `!foo` ones, leave the text as it is.
        _ => Ok(Scalar::Str(text.to_string())),
    }
}

/// Resolves `text` and checks it against an explicit core tag, which may
/// only widen an int to a float.
fn resolve_tagged(text: &str, expected: &str) -> Result<Scalar, String> {
    let scalar = resolve_plain(text);
    let got = type_name(&scalar);
    match (&scalar, expected) {
        _ if got == expected => Ok(scalar),
        (Scalar::Int(i), "float") => Ok(Scalar::Float(*i as f64)),
        _ => Err(format!("cannot decode !!{got} `{text}` as a !!{expected}")),
    }
}

/// Resolves the words YAML 1.1 gives a fixed meaning, as go-yaml v2 lists
/// them.
fn fixed_word(text: &str) -> Option<Scalar> {
    let scalar = match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Scalar::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Scalar::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Scalar::Float(f64::NEG_INFINITY),
        _ => return None,
    };
    Some(scalar)
}

/// Resolves an untagged plain scalar. Only text whose first character can
/// start a non-string is looked at further, as in go-yaml v2.
fn resolve_plain(text: &str) -> Scalar {
    let first = text.bytes().next();
    let hinted = match first {
        None => true,
        Some(b) => b"+-0123456789yYnNtTfFoO~.".contains(&b),
    };
    if !hinted {
        return Scalar::Str(text.to_string());
    }
    if let Some(scalar) = fixed_word(text) {
        return scalar;
    }
    match first {
        Some(b'.') => dot_float(text),
        Some(b'+' | b'-' | b'0'..=b'9') => number(text),
        _ => None,
    }
    .unwrap_or_else(|| Scalar::Str(text.to_string()))
}

/// Parses a plain scalar starting with '.', such as `.5` or `.5e3`.
fn dot_float(text: &str) -> Option<Scalar> {
    let rest = text.strip_prefix('.')?;
    let (digits, exponent) = split_exponent(rest);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && exponent.is_none_or(valid_exponent);
    if !ok {
        return None;
    }
    finite(text)
}

/// Integers (decimal, 0x hex, 0o or leading-0 octal, 0b binary, with sign
/// and `_` separators ignored) and floats, in go-yaml v2's order: a signed
/// 64-bit int, then an unsigned one, then a float.
fn number(text: &str) -> Option<Scalar> {
    let plain = text.replace('_', "");
    if let Some(value) = parse_go_int(&plain) {
        return Some(Scalar::Int(value));
    }
    if let Some(value) = parse_go_uint(&plain) {
        return Some(Scalar::Uint(value));
    }
    if is_yaml_float(&plain) {
        return finite(&plain);
    }
    None
}

/// Parses a float, refusing results out of range as Go's ParseFloat does.
fn finite(text: &str) -> Option<Scalar> {
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(Scalar::Float(value))
}

fn split_exponent(text: &str) -> (&str, Option<&str>) {
    match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    }
}

fn valid_exponent(exponent: &str) -> bool {
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, go-yaml v2's
/// float pattern.
fn is_yaml_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = split_exponent(unsigned);
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => !fraction.is_empty() && digits(fraction),
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(valid_exponent)
}

/// Go's `strconv.ParseInt(text, 0, 64)`.
fn parse_go_int(text: &str) -> Option<i64> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = i128::from(parse_go_uint(body)?);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// Go's `strconv.ParseUint(text, 0, 64)`: no sign; a `0x`, `0o` or `0b`
/// prefix, or a bare leading `0` for octal.
fn parse_go_uint(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let (radix, digits) = if bytes[0] != b'0' {
        (10, text)
    } else if bytes.len() >= 3 {
        match bytes[1].to_ascii_lowercase() {
            b'x' => (16, &text[2..]),
            b'o' => (8, &text[2..]),
            b'b' => (2, &text[2..]),
            _ => (8, &text[1..]),
        }
    } else {
        (8, &text[1..])
    };
    digits.chars().try_fold(0u64, |acc, c| {
        let digit = c.to_digit(radix)?;
        acc.checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

/// go-yaml v2 tries a timestamp only for text that starts with a
/// four-digit year and '-'. Untagged, such text stays a string either way.
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// Decodes a `!!binary` scalar: standard base64 with padding; line breaks
/// are ignored. Bytes that are not UTF-8 become U+FFFD, as Go's JSON
/// encoder writes them.
fn decode_base64(text: &str) -> Result<String, String> {
    const INVALID: &str = "!!binary value contains invalid base64 data";
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    if !symbols.len().is_multiple_of(4) {
        return Err(INVALID.to_string());
    }
    let mut bytes = Vec::with_capacity(symbols.len() / 4 * 3);
    let last = symbols.len() / 4;
    for (index, quad) in symbols.chunks(4).enumerate() {
        let padding = quad.iter().rev().take_while(|b| **b == b'=').count();
        if padding > 2 || (padding > 0 && index + 1 != last) {
            return Err(INVALID.to_string());
        }
        let mut word = 0u32;
        for symbol in &quad[..4 - padding] {
            word = word << 6 | base64_value(*symbol).ok_or(INVALID)?;
        }
        word <<= 6 * padding as u32;
        let decoded = word.to_be_bytes();
        bytes.extend_from_slice(&decoded[1..4 - padding]);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn base64_value(symbol: u8) -> Option<u32> {
    let value = match symbol {
        b'A'..=b'Z' => symbol - b'A',
        b'a'..=b'z' => symbol - b'a' + 26,
        b'0'..=b'9' => symbol - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Converts a resolved scalar to the JSON value kubectl sends: what
/// `json.Marshal` writes for it, read back. NaN and infinities have no
/// JSON form, so kubectl rejects them.
pub(super) fn to_json(scalar: &Scalar) -> Result<Value, String> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::from(*i),
        Scalar::Uint(u) => Value::from(*u),
        Scalar::Str(s) => Value::String(s.clone()),
        Scalar::Float(f) if f.is_nan() => return Err("json: unsupported value: NaN".to_string()),
        Scalar::Float(f) if f.is_infinite() => {
            let sign = if *f > 0.0 { '+' } else { '-' };
            return Err(format!("json: unsupported value: {sign}Inf"));
        }
        Scalar::Float(f) => float_to_json(*f),
    })
}

/// Go writes a float with no fraction and a magnitude below 1e21 as its
/// shortest digits padded with zeros (`-0`, `8`, `9223372036854776000`),
/// which read back as an integer when they fit one. Rust's `Display` for
/// f64 writes the same digits.
fn float_to_json(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e21 {
        let digits = value.to_string();
        return serde_json::from_str(&digits).expect("a float's digits are a JSON number");
    }
    Value::from(value)
}

/// Converts a map key to the string sigs.k8s.io/yaml makes of it. Null keys
/// and integers above the int64 range are rejected, as there.
pub(super) fn key_string(scalar: &Scalar) -> Result<String, String> {
    match scalar {
        Scalar::Str(s) => Ok(s.clone()),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Bool(b) => Ok(b.to_string()),
        Scalar::Float(f) => Ok(float32_key(*f)),
        Scalar::Null => Err("unsupported map key: null".to_string()),
        Scalar::Uint(u) => Err(format!(
            "unsupported map key: {u} (an integer above the int64 range)"
        )),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, with infinities and NaN
/// spelled as YAML spells them: the key `1.5` stays "1.5", `1e6` becomes
/// "1e+06", and `0.1` keeps float32's shortest form "0.1".
fn float32_key(value: f64) -> String {
    let narrow = value as f32;
    if narrow.is_nan() {
        return ".nan".to_string();
    }
    if narrow.is_infinite() {
        return if narrow > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    let sign = if narrow.is_sign_negative() { "-" } else { "" };
    if narrow == 0.0 {
        return format!("{sign}0");
    }
    // Rust's shortest round-trip digits for f32 are the ones Go picks.
    let scientific = format!("{:e}", narrow.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().expect("{:e} writes an integer exponent");
    let body = if !(-4..6).contains(&exponent) {
        go_exponent_form(&digits, exponent)
    } else {
        go_decimal_form(&digits, exponent + 1)
    };
    format!("{sign}{body}")
}

/// `d.ddde+XX`, with at least two exponent digits.
fn go_exponent_form(digits: &[u8], exponent: i32) -> String {
    let mut out = String::from(digits[0] as char);
    if digits.len() > 1 {
        out.push('.');
        out.extend(digits[1..].iter().map(|d| *d as char));
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    out.push_str(&format!("e{sign}{:02}", exponent.abs()));
    out
}

/// Plain decimal notation with the point after `point` digits.
fn go_decimal_form(digits: &[u8], point: i32) -> String {
    let digit_at = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .map_or('0', |d| *d as char)
    };
    let mut out: String = if point > 0 {
        (0..point).map(digit_at).collect()
    } else {
        "0".to_string()
    };
    let fraction = digits.len() as i32 - point;
    if fraction > 0 {
        out.push('.');
        out.extend((point..point + fraction).map(digit_at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Scalar {
        resolve(text, true, None).unwrap()
    }

    #[test]
    fn yaml_1_1_booleans() {
        for word in [
            "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "TRUE",
        ] {
            assert_eq!(plain(word), Scalar::Bool(true), "{word}");
        }
        for word in [
            "n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False",
        ] {
            assert_eq!(plain(word), Scalar::Bool(false), "{word}");
        }
        for word in ["yES", "oN", "tRUE", "nO"] {
            assert_eq!(plain(word), Scalar::Str(word.to_string()), "{word}");
        }
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        for word in ["yes", "1", "null", "0x10", ""] {
            assert_eq!(
                resolve(word, false, None).unwrap(),
                Scalar::Str(word.to_string())
            );
        }
    }

    #[test]
    fn nulls() {
        for word in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(plain(word), Scalar::Null, "{word}");
        }
        assert_eq!(plain("nULL"), Scalar::Str("nULL".to_string()));
    }

    #[test]
    fn integers_as_go_parses_them() {
        assert_eq!(plain("0x1F"), Scalar::Int(31));
        assert_eq!(plain("0o17"), Scalar::Int(15));
        assert_eq!(plain("017"), Scalar::Int(15));
        assert_eq!(plain("0b101"), Scalar::Int(5));
        assert_eq!(plain("-0b101"), Scalar::Int(-5));
        assert_eq!(plain("+42"), Scalar::Int(42));
        assert_eq!(plain("1_000"), Scalar::Int(1000));
        assert_eq!(plain("0"), Scalar::Int(0));
        assert_eq!(plain("-9223372036854775808"), Scalar::Int(i64::MIN));
        assert_eq!(plain("18446744073709551615"), Scalar::Uint(u64::MAX));
        assert_eq!(plain("08"), Scalar::Float(8.0));
        assert_eq!(plain("0x"), Scalar::Str("0x".to_string()));
        assert_eq!(plain("0xG"), Scalar::Str("0xG".to_string()));
        assert_eq!(plain("1:20"), Scalar::Str("1:20".to_string()));
    }

    #[test]
    fn floats() {
        assert_eq!(plain("1.5"), Scalar::Float(1.5));
        assert_eq!(plain(".5"), Scalar::Float(0.5));
        assert_eq!(plain("-.5"), Scalar::Float(-0.5));
        assert_eq!(plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(plain("1."), Scalar::Float(1.0));
        assert_eq!(plain("1e999"), Scalar::Str("1e999".to_string()));
        assert_eq!(plain("._5"), Scalar::Str("._5".to_string()));
        assert!(matches!(plain(".NaN"), Scalar::Float(f) if f.is_nan()));
        assert_eq!(plain("-.inf"), Scalar::Float(f64::NEG_INFINITY));
        assert_eq!(plain(".infinity"), Scalar::Str(".infinity".to_string()));
    }

    #[test]
    fn explicit_tags() {
        let int = Some("tag:yaml.org,2002:int");
        assert_eq!(resolve("12", false, int).unwrap(), Scalar::Int(12));
        assert!(resolve("1.5", true, int).is_err());
        let float = Some("tag:yaml.org,2002:float");
        assert_eq!(resolve("1", true, float).unwrap(), Scalar::Float(1.0));
        let string = Some("tag:yaml.org,2002:str");
        assert_eq!(
            resolve("yes", true, string).unwrap(),
            Scalar::Str("yes".to_string())
        );
        assert_eq!(
            resolve("12", true, Some("!local")).unwrap(),
            Scalar::Str("12".to_string())
        );
        let binary = Some("tag:yaml.org,2002:binary");
        assert_eq!(
            resolve("aGVs\nbG8=", false, binary).unwrap(),
            Scalar::Str("hello".to_string())
        );
        assert!(resolve("a", false, binary).is_err());
    }

    #[test]
    fn json_forms() {
        assert_eq!(to_json(&Scalar::Float(8.0)).unwrap(), Value::from(8u64));
        assert_eq!(to_json(&Scalar::Float(-0.0)).unwrap(), Value::from(-0.0));
        assert_eq!(to_json(&Scalar::Float(0.0)).unwrap(), Value::from(0u64));
        assert_eq!(
            to_json(&Scalar::Float(-9223372036854775809.0)).unwrap(),
            Value::from(-9.223372036854776e18)
        );
        assert_eq!(
            to_json(&Scalar::Float(1e19)).unwrap(),
            Value::from(10_000_000_000_000_000_000u64)
        );
        assert_eq!(to_json(&Scalar::Float(1.5)).unwrap(), Value::from(1.5));
        assert_eq!(to_json(&Scalar::Float(1e21)).unwrap(), Value::from(1e21));
        assert!(to_json(&Scalar::Float(f64::NAN)).is_err());
        assert_eq!(
            to_json(&Scalar::Float(f64::INFINITY)).unwrap_err(),
            "json: unsupported value: +Inf"
        );
    }

    #[test]
    fn keys_as_sigs_yaml_writes_them() {
        let key = |text: &str| key_string(&plain(text));
        assert_eq!(key("yes").unwrap(), "true");
        assert_eq!(key("0x10").unwrap(), "16");
        assert_eq!(key("1.5").unwrap(), "1.5");
        assert_eq!(key("0.1").unwrap(), "0.1");
        assert_eq!(key("1e6").unwrap(), "1e+06");
        assert_eq!(key("123456.0").unwrap(), "123456");
        assert_eq!(key("0.0001").unwrap(), "0.0001");
        assert_eq!(key("0.00001").unwrap(), "1e-05");
        assert_eq!(key("3.14159265358979").unwrap(), "3.1415927");
        assert_eq!(key("-2.5e-7").unwrap(), "-2.5e-07");
        assert_eq!(key(".inf").unwrap(), ".inf");
        assert_eq!(key("-.inf").unwrap(), "-.inf");
        assert_eq!(key(".nan").unwrap(), ".nan");
        assert_eq!(key("1e39").unwrap(), ".inf");
        assert!(key("~").is_err());
        assert!(key("18446744073709551615").is_err());
    }
}
