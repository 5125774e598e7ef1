//! JSON by hand (serde is a test-only dependency): string literals for the reports, and a
//! small parser with a structural comparison for `check`, which compares documents copied from
//! Dragonfly into RedisJSON. The two print the same document differently (number forms such
//! as `1e+300` / `1e300` and `100.0`, escapes such as `\u001F` / `\u001f`, member order), and
//! RedisJSON's number parser can be a few units in the last place off
//! (`90.33333333333333` reads back as `90.33333333333331`), so documents are compared as
//! trees, with non-integer numbers equal within a relative [`DOUBLE_TOLERANCE`].

use std::collections::BTreeMap;
use std::fmt::Write;

/// `s` as a JSON string literal, quotes included. Control characters become `\uXXXX` (or
/// their short forms); everything else passes through, since a `&str` is valid UTF-8.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether JSON text holds an integer literal outside the signed and unsigned 64-bit ranges.
/// Dragonfly keeps such integers exactly (jsoncons big integers, printed as their digits);
/// RedisJSON stores them as doubles (`123456789012345678901234567890` reads back as
/// `1.2345678901234568e29`), so a copy of the document is altered and must be counted. A
/// linear scan over the text: string contents are skipped, a number counts when it starts a
/// token and has no fraction or exponent.
pub fn has_wide_integer(text: &[u8]) -> bool {
    const MAX_NEG: &[u8] = b"9223372036854775808";
    const MAX_POS: &[u8] = b"18446744073709551615";
    let mut i = 0;
    let mut boundary = true;
    while i < text.len() {
        let c = text[i];
        match c {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                boundary = false;
                continue;
            }
            b'-' | b'0'..=b'9' if boundary => {
                let neg = c == b'-';
                let start = if neg { i + 1 } else { i };
                let mut end = start;
                while end < text.len() && text[end].is_ascii_digit() {
                    end += 1;
                }
                let fraction = end < text.len() && matches!(text[end], b'.' | b'e' | b'E');
                let mut digits = &text[start..end];
                while digits.len() > 1 && digits[0] == b'0' {
                    digits = &digits[1..];
                }
                let max = if neg { MAX_NEG } else { MAX_POS };
                if !fraction && (digits.len() > max.len() || (digits.len() == max.len() && digits > max)) {
                    return true;
                }
                i = end.max(i + 1);
                boundary = false;
                continue;
            }
            b'[' | b',' | b':' | b'{' | b' ' | b'\t' | b'\n' | b'\r' => boundary = true,
            _ => boundary = false,
        }
        i += 1;
    }
    false
}

/// Non-integer numbers closer than this, relative to the larger, are the same number.
pub const DOUBLE_TOLERANCE: f64 = 1e-12;

/// Nesting deeper than this is refused (Dragonfly and RedisJSON both stop well before).
const MAX_DEPTH: usize = 1024;

/// A parsed document. Numbers keep their text: integers are compared exactly, others as
/// doubles within the tolerance.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    /// Members by name. A repeated name keeps its first value, as Dragonfly does (jsoncons
    /// sorts members stably and drops the later duplicates); RedisJSON would keep the last.
    Object(BTreeMap<String, Json>),
}

/// Parse one JSON document (surrounding whitespace allowed). The error names the byte offset.
pub fn parse(text: &[u8]) -> Result<Json, String> {
    parse_noting(text).map(|(v, _)| v)
}

/// What parsing met besides the value.
#[derive(Debug, Default, Clone, Copy)]
struct Noted {
    /// An object repeated a member name.
    repeated: bool,
    /// A `\u` escape was not a whole character (a lone surrogate), read as U+FFFD.
    lossy: bool,
}

fn parse_noting(text: &[u8]) -> Result<(Json, Noted), String> {
    let mut p = Parser { s: text, i: 0, noted: Noted::default() };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return Err(format!("unexpected {:?} after the document at byte {}", p.s[p.i] as char, p.i));
    }
    Ok((v, p.noted))
}

/// A JSON value for RedisJSON that has the value Dragonfly gave it: when an object in `text`
/// repeats a member name, Dragonfly keeps the first and RedisJSON the last, so the text is
/// printed again with only the first (compact, members sorted, numbers as written). `None`
/// when no name repeats, or the text does not parse or holds a lone surrogate escape (it then
/// goes as it is).
pub fn first_members_only(text: &[u8]) -> Option<Vec<u8>> {
    let (v, noted) = parse_noting(text).ok()?;
    if !noted.repeated || noted.lossy {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    print(&v, &mut out);
    Some(out.into_bytes())
}

/// Compact JSON text of `v`: members in name order, numbers as they were written.
pub fn print(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::Str(s) => out.push_str(&string(s)),
        Json::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                print(e, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            out.push('{');
            for (i, (k, e)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&string(k));
                out.push(':');
                print(e, out);
            }
            out.push('}');
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    noted: Noted,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        let ok = self.s[self.i..].starts_with(lit);
        if ok {
            self.i += lit.len();
        }
        ok
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'n') if self.eat(b"null") => Ok(Json::Null),
            Some(b't') if self.eat(b"true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat(b"false") => Ok(Json::Bool(false)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Ok(Json::Array(v));
                }
                loop {
                    self.ws();
                    v.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b"]") {
                        return Ok(Json::Array(v));
                    }
                    if !self.eat(b",") {
                        return self.err("expected ',' or ']'");
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.eat(b"}") {
                    return Ok(Json::Object(m));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a member name");
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return self.err("expected ':'");
                    }
                    self.ws();
                    let v = self.value(depth + 1)?;
                    // The first of repeated names is kept, as Dragonfly applied it.
                    match m.entry(k) {
                        std::collections::btree_map::Entry::Occupied(_) => self.noted.repeated = true,
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(v);
                        }
                    }
                    self.ws();
                    if self.eat(b"}") {
                        return Ok(Json::Object(m));
                    }
                    if !self.eat(b",") {
                        return self.err("expected ',' or '}'");
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > from
        };
        self.eat(b"-");
        if !digits(self) {
            return self.err("expected digits");
        }
        if self.eat(b".") && !digits(self) {
            return self.err("expected digits after '.'");
        }
        if self.eat(b"e") || self.eat(b"E") {
            let _ = self.eat(b"+") || self.eat(b"-");
            if !digits(self) {
                return self.err("expected exponent digits");
            }
        }
        Ok(Json::Number(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else { return self.err("unterminated string") };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else { return self.err("unterminated escape") };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) && self.eat(b"\\u") {
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                hi
                            };
                            char::from_u32(cp).unwrap_or_else(|| {
                                self.noted.lossy = true;
                                '\u{FFFD}'
                            })
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut b = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| format!("string ending at byte {} is not UTF-8", self.i))
    }
}

/// Whether two numbers (as written) are the same: integers exactly, others within the
/// relative tolerance. An integer against a double is the same only when the double is
/// exactly that integer: an integer RedisJSON turned into a double lost digits.
fn same_number(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let exact = |i: i128, f: &str| f.parse::<f64>().is_ok_and(|f| f.fract() == 0.0 && f.abs() < 1e38 && f as i128 == i);
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => return x == y,
        (Ok(x), Err(_)) => return exact(x, b),
        (Err(_), Ok(y)) => return exact(y, a),
        _ => {}
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= DOUBLE_TOLERANCE * x.abs().max(y.abs()),
        _ => false,
    }
}

/// The first difference between two documents, with its JSONPath (`$.a[2]`); `None` when
/// they are the same.
pub fn difference(a: &Json, b: &Json) -> Option<String> {
    let mut path = String::from("$");
    diff_at(a, b, &mut path)
}

fn short(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.clone(),
        Json::Str(s) if s.chars().count() > 40 => format!("{}...", string(&s.chars().take(40).collect::<String>())),
        Json::Str(s) => string(s),
        Json::Array(a) => format!("an array of {}", a.len()),
        Json::Object(o) => format!("an object of {} members", o.len()),
    }
}

fn diff_at(a: &Json, b: &Json, path: &mut String) -> Option<String> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) if same_number(x, y) => None,
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            let len = path.len();
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                let _ = write!(path, "[{i}]");
                if let Some(d) = diff_at(u, v, path) {
                    return Some(d);
                }
                path.truncate(len);
            }
            None
        }
        (Json::Object(x), Json::Object(y)) => {
            if let Some(k) = x.keys().find(|k| !y.contains_key(*k)) {
                return Some(format!("{path}: member {} missing on the target", string(k)));
            }
            if let Some(k) = y.keys().find(|k| !x.contains_key(*k)) {
                return Some(format!("{path}: member {} only on the target", string(k)));
            }
            let len = path.len();
            for (k, u) in x {
                let _ = write!(path, "[{}]", string(k));
                if let Some(d) = diff_at(u, &y[k], path) {
                    return Some(d);
                }
                path.truncate(len);
            }
            None
        }
        (x, y) if x == y => None,
        (x, y) => Some(format!("{path}: source {}, target {}", short(x), short(y))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(super::string("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn parses_every_kind_of_value() {
        let v = parse(br#" {"a":[1,-2.5e+3,null,true,false],"b":{"c":"x\"\\\/\u00e9\ud83d\ude00\n"},"a":0} "#).unwrap();
        let Json::Object(m) = &v else { panic!("{v:?}") };
        assert_eq!(m["a"], Json::Array(["1", "-2.5e+3"].map(|n| Json::Number(n.into())).into_iter().chain([Json::Null, Json::Bool(true), Json::Bool(false)]).collect()), "a repeated member keeps its first value");
        let Json::Object(b) = &m["b"] else { panic!() };
        assert_eq!(b["c"], Json::Str("x\"\\/é😀\n".into()));
        for bad in [&b"{"[..], b"[1,]", b"01x", b"\"abc", b"{\"a\" 1}", b"tru", b"1 2", b"-", b"1.", b"\"\\x\""] {
            assert!(parse(bad).is_err(), "{:?} must not parse", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("too deep"));
    }

    #[test]
    fn dragonfly_and_redisjson_prints_of_one_document_are_the_same() {
        // Dragonfly (jsoncons): sorted members, `.0`, `e+`, upper-case hex escapes.
        let dfly = parse(br#"{"a":90.33333333333333,"b":1e+300,"c":100.0,"d":"\u001F","e":[9223372036854775807]}"#).unwrap();
        // RedisJSON 2.8: insertion order, its own number forms, one double a few ULPs off.
        let rj = parse(br#"{"e":[9223372036854775807],"d":"\u001f","c":100.0,"b":1e300,"a":90.33333333333331}"#).unwrap();
        assert_eq!(difference(&dfly, &rj), None);
    }

    #[test]
    fn repeated_members_keep_the_first_as_dragonfly_does() {
        let text = br#" {"b":{"x":1,"x":[2]},"a":"\u00e9\n","b":0, "n":-1.50e+3} "#;
        assert_eq!(first_members_only(text).unwrap(), r#"{"a":"é\n","b":{"x":1},"n":-1.50e+3}"#.as_bytes().to_vec());
        assert_eq!(first_members_only(br#"{"a":1,"b":{"a":2}}"#), None, "no name repeats within one object");
        assert_eq!(first_members_only(br#"{"a":1,"a":2,"#), None, "does not parse: sent as it is");
        assert_eq!(first_members_only(br#"{"a":"\ud800","a":2}"#), None, "a lone surrogate would not survive a reprint");
    }

    #[test]
    fn wide_integers_are_found_outside_strings() {
        assert!(!has_wide_integer(br#"{"a":[18446744073709551615,-9223372036854775808,1.5e300,0.123456789012345678901234]}"#));
        assert!(has_wide_integer(br#"{"a":18446744073709551616}"#));
        assert!(has_wide_integer(br#"[1, -9223372036854775809]"#));
        assert!(has_wide_integer(b"123456789012345678901234567890"));
        assert!(!has_wide_integer(br#"{"s":"123456789012345678901234567890 \" 99999999999999999999999","k":1}"#));
        assert!(!has_wide_integer(b"$.a[1]"), "a path is no document and holds no wide integer");
        assert!(!has_wide_integer(br#"{"x":"unterminated"#));
    }

    #[test]
    fn differences_name_the_path() {
        let d = |a: &str, b: &str| difference(&parse(a.as_bytes()).unwrap(), &parse(b.as_bytes()).unwrap());
        assert_eq!(d(r#"{"a":[1,{"b":1.5}]}"#, r#"{"a":[1,{"b":1.6}]}"#).unwrap(), r#"$["a"][1]["b"]: source 1.5, target 1.6"#);
        assert_eq!(d("[1,2]", "[1,2,3]").unwrap(), "$: source an array of 2, target an array of 3");
        assert_eq!(d(r#"{"a":1}"#, r#"{"b":1}"#).unwrap(), r#"$: member "a" missing on the target"#);
        assert_eq!(d(r#"{"a":1}"#, r#"{"a":1,"b":1}"#).unwrap(), r#"$: member "b" only on the target"#);
        assert_eq!(d("9007199254740993", "9007199254740992").unwrap(), "$: source 9007199254740993, target 9007199254740992", "integers exactly");
        assert_eq!(d("1", "1.0"), None);
        assert_eq!(
            d("123456789012345678901234567890", "1.2345678901234568e29").unwrap(),
            "$: source 123456789012345678901234567890, target 1.2345678901234568e29",
            "digits RedisJSON lost are a difference"
        );
        assert_eq!(d(r#""x""#, "null").unwrap(), r#"$: source "x", target null"#);
        assert_eq!(d("0.1", "0.1000001").unwrap(), "$: source 0.1, target 0.1000001");
    }
}
