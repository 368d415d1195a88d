//! Jinja chat templates rendered with `minijinja`, configured as Hugging Face's `transformers`
//! and llama.cpp's own Jinja engine render them: `trim_blocks` and `lstrip_blocks` on, loop
//! controls, Python's string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...),
//! `raise_exception(msg)`, `strftime_now(fmt)`, and the variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (when given) and
//! `enable_thinking`.
//!
//! Templates come from model files, which may be hostile: rendering is bounded in work
//! ([`FUEL`]), recursion depth and output size, and a panic inside the engine becomes an error.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr, Value};
use minijinja::{Environment, ErrorKind, syntax::SyntaxConfig};

use super::{ChatMessage, MAX_CHAT_BYTES, chat_error};
use crate::error::Result;

/// The work one rendering may do (minijinja's fuel): one unit per instruction, and one per 64
/// bytes of text produced or processed. Real chat templates need a few thousand for a long
/// conversation; a template looping or growing a string on purpose stops within a second.
pub const FUEL: u64 = 5_000_000;

/// The deepest recursion (macros, nested calls) a template may reach.
const RECURSION_LIMIT: usize = 100;

/// The template's name inside its environment (shown in error messages).
const NAME: &str = "chat_template";

/// A compiled Jinja chat template.
#[derive(Clone)]
pub(crate) struct Jinja {
    env: Environment<'static>,
}

impl std::fmt::Debug for Jinja {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jinja").finish_non_exhaustive()
    }
}

/// What one rendering gets besides the messages.
pub(crate) struct Inputs<'a> {
    pub add_generation_prompt: bool,
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    /// Tool definitions, already parsed (a JSON array).
    pub tools: Option<Value>,
    /// More variables (`--chat-template-kwargs`), already parsed; they override the others.
    pub extra: Vec<(String, Value)>,
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.kind() {
        ErrorKind::OutOfFuel => {
            format!("the template ran out of its work budget ({FUEL} instructions, or 64 times as many bytes of text)")
        }
        _ => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Jinja {
    /// Compiles `source`; a syntax error names its line.
    pub(crate) fn compile(source: &str) -> Result<Jinja> {
        if source.len() > MAX_CHAT_BYTES {
            return Err(chat_error(format!("the template has {} bytes; at most {MAX_CHAT_BYTES}", source.len())));
        }
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| chat_error(format!("Jinja syntax configuration: {e}")))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        let source = source.to_owned();
        let added = catch_unwind(AssertUnwindSafe(|| env.add_template_owned(NAME, source)))
            .map_err(|_| chat_error("the Jinja engine panicked while parsing the template"))?;
        added.map_err(|e| chat_error(format!("the template does not parse: {}", describe(&e))))?;
        Ok(Jinja { env })
    }

    /// Renders `messages` with `inputs`.
    pub(crate) fn render(&self, messages: &[ChatMessage], inputs: Inputs<'_>) -> Result<String> {
        let mut vars: BTreeMap<String, Value> = BTreeMap::new();
        vars.insert("messages".into(), messages.iter().map(message_value).collect::<Value>());
        vars.insert("add_generation_prompt".into(), Value::from(inputs.add_generation_prompt));
        vars.insert("bos_token".into(), Value::from(inputs.bos_token));
        vars.insert("eos_token".into(), Value::from(inputs.eos_token));
        vars.insert("enable_thinking".into(), Value::from(true));
        if let Some(tools) = inputs.tools {
            vars.insert("tools".into(), tools);
        }
        for (k, v) in inputs.extra {
            vars.insert(k, v);
        }
        let ctx = Value::from(vars);
        let rendered = catch_unwind(AssertUnwindSafe(|| self.env.get_template(NAME).and_then(|t| t.render(ctx))))
            .map_err(|_| chat_error("the Jinja engine panicked while rendering the template"))?;
        let text = rendered.map_err(|e| chat_error(format!("the template failed to render: {}", describe(&e))))?;
        if text.len() > MAX_CHAT_BYTES {
            return Err(chat_error(format!("the rendered prompt has {} bytes; at most {MAX_CHAT_BYTES}", text.len())));
        }
        Ok(text)
    }
}

fn message_value(m: &ChatMessage) -> Value {
    let mut map: BTreeMap<&'static str, Value> = BTreeMap::new();
    map.insert("role", Value::from(m.role.as_str()));
    map.insert("content", Value::from(m.content.as_str()));
    Value::from(map)
}

/// `raise_exception(message)`: the template refuses the conversation (e.g. roles out of order).
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("the template raised an exception: {message}")))
}

/// `strftime_now(format)`: today's date and time (UTC) in a subset of C's `strftime` formats
/// (`%Y %m %d %e %B %b %H %M %S %j %y %A %a %p %I %%`), as Llama 3 templates use it for the date.
fn strftime_now(format: String) -> std::result::Result<Value, minijinja::Error> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs).map(Value::from)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];

/// Formats the UTC time `secs` (seconds since 1970).
pub(crate) fn strftime(format: &str, secs: i64) -> std::result::Result<String, minijinja::Error> {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "strftime_now: the format ends with %"));
        };
        let month_name = MONTHS[(month - 1) as usize];
        let day_name = DAYS[days.rem_euclid(7) as usize];
        match spec {
            'Y' => out.push_str(&year.to_string()),
            'y' => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            'm' => out.push_str(&format!("{month:02}")),
            'd' => out.push_str(&format!("{day:02}")),
            'e' => out.push_str(&format!("{day:2}")),
            'j' => out.push_str(&format!("{day_of_year:03}")),
            'B' => out.push_str(month_name),
            'b' | 'h' => out.push_str(&month_name[..3]),
            'A' => out.push_str(day_name),
            'a' => out.push_str(&day_name[..3]),
            'H' => out.push_str(&format!("{hour:02}")),
            'I' => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'M' => out.push_str(&format!("{minute:02}")),
            'S' => out.push_str(&format!("{second:02}")),
            '%' => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{other} is not supported"),
                ));
            }
        }
    }
    Ok(out)
}

/// Year, month (1-12) and day (1-31) of day `z` since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A JSON value as a template value (objects keep their key order).
pub(crate) fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => a.iter().map(json_value).collect::<Value>(),
        serde_json::Value::Object(o) => {
            Value::from_object(OrderedMap(o.iter().map(|(k, v)| (Value::from(k.as_str()), json_value(v))).collect()))
        }
    }
}

/// A JSON object as a template map that keeps the file's key order (`tojson` of a tool's
/// parameters prints them as written, as Python's dicts do).
#[derive(Debug)]
struct OrderedMap(Vec<(Value, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.0.iter().map(|(k, _)| k.clone())))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %b %j", 0).unwrap(), "1970-01-01 00:00:00 Thu Jan 001");
        // 2024-02-29 12:34:56 UTC, a Thursday.
        assert_eq!(strftime("%d %b %Y, %A %I%p %%", 1_709_210_096).unwrap(), "29 Feb 2024, Thursday 12PM %");
        assert_eq!(strftime("%e %B %y %j", 1_735_603_200).unwrap(), "31 December 24 366");
        assert!(strftime("%Q", 0).is_err());
        assert!(strftime("100%", 0).is_err());
        for days in [-800_000i64, -1, 0, 59, 60, 365, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
