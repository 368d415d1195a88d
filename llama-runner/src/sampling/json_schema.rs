//! JSON Schema to GBNF: [`json_schema_to_gbnf`] turns a JSON Schema into a grammar whose start
//! rule `root` generates JSON text valid against the schema, in the shapes llama.cpp's
//! `common/json-schema-to-grammar.cpp` produces (the primitive rules `space`, `value`, `object`,
//! `array`, `string`, `char`, `number`, `integer`, `boolean`, `null`; one rule per referenced
//! definition; objects with their properties in the schema's order).
//!
//! What the conversion cannot express it refuses, naming the keyword and its JSON pointer,
//! rather than silently producing a grammar that accepts invalid JSON: regular expressions
//! (`pattern`), ranges on non-integers, `multipleOf`, `not`, conditionals, `uniqueItems` and
//! the like. Annotations (`title`, `description`, `default`, `examples`, unknown `format`s...)
//! are ignored. The output always passes [`check_gbnf`](super::check_gbnf).
//!
//! Conventions (as in llama.cpp's converter): an object without `additionalProperties` admits no
//! properties beyond its `properties`, and a tuple (`prefixItems`) without `items` admits no
//! items beyond its prefix; whitespace is allowed after `{`, `[`, `,` and `:` and before `}`
//! and `]`, at most one line break and 20 spaces or tabs at a time; numbers have at most 16
//! digits before and after the point.

use crate::error::Result;

/// The deepest schema nesting accepted (each subschema, `$ref` hop and `allOf` member is one
/// level): the conversion recurses once per level.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// Converts a JSON Schema (JSON text) to a GBNF grammar with the start rule `root`.
///
/// Supported: `true`, `{}`, `type` (a name or a list), `enum`, `const`, `anyOf`, `oneOf` (as
/// alternatives), `allOf` of object schemas (merged), `properties`, `required`,
/// `additionalProperties`, `items`, `prefixItems`, `additionalItems`, `minItems`, `maxItems`,
/// `minLength`, `maxLength`, `format` `date`, `time`, `date-time` and `uuid`, integer
/// `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, and `$ref` to `#` or `#/...`
/// pointers (recursion included). Anything else that constrains the JSON is an
/// [`Error::JsonSchema`](crate::Error::JsonSchema) naming the keyword and where it is.
///
/// ```
/// # #[cfg(feature = "json-schema")] {
/// use llama_runner::sampling::{check_gbnf, json_schema_to_gbnf};
///
/// let gbnf = json_schema_to_gbnf(r#"{"type": "object", "properties": {"name": {"type": "string"}},
///     "required": ["name"]}"#).unwrap();
/// assert!(check_gbnf(&gbnf).is_ok());
/// assert!(json_schema_to_gbnf(r#"{"type": "strin"}"#).unwrap_err().to_string().contains("strin"));
/// # }
/// ```
pub fn json_schema_to_gbnf(schema: &str) -> Result<String> {
    #[cfg(feature = "json-schema")]
    {
        imp::convert(schema)
    }
    #[cfg(not(feature = "json-schema"))]
    {
        let _ = schema;
        Err(crate::error::Error::JsonSchema {
            path: String::new(),
            problem: "llama-runner was built without the `json-schema` feature".into(),
        })
    }
}

#[cfg(feature = "json-schema")]
mod imp {
    use std::collections::{HashMap, HashSet};
    use std::fmt::Write as _;

    use serde_json::{Map, Value};

    use super::MAX_SCHEMA_DEPTH;
    use crate::error::{Error, Result};
    use crate::sampling::{MAX_REPETITIONS, check_gbnf};

    static TRUE: Value = Value::Bool(true);

    /// The largest count written in one repetition (`x{0,N}`): llama.cpp refuses a repetition
    /// that expands to `MAX_REPETITIONS` rules or more.
    const MAX_COUNT: u64 = MAX_REPETITIONS - 1;

    /// Digits of an unbounded integer (llama.cpp's `integral-part` allows 16).
    const MAX_INT_DIGITS: usize = 16;

    /// Keywords that only annotate: ignored.
    const ANNOTATIONS: &[&str] = &[
        "title",
        "description",
        "$schema",
        "$id",
        "id",
        "$comment",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "$defs",
        "definitions",
        "$anchor",
        "$dynamicAnchor",
        "$vocabulary",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
    ];

    /// Keywords that constrain the JSON and that the conversion does not implement.
    const UNSUPPORTED: &[&str] = &[
        "pattern",
        "multipleOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minProperties",
        "maxProperties",
        "$dynamicRef",
        "$recursiveRef",
    ];

    const OBJECT_KEYWORDS: &[&str] = &["properties", "required", "additionalProperties"];
    const ARRAY_KEYWORDS: &[&str] = &["items", "prefixItems", "additionalItems", "minItems", "maxItems"];
    const STRING_KEYWORDS: &[&str] = &["minLength", "maxLength"];
    const RANGE_KEYWORDS: &[&str] = &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
    const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];

    /// The fixed rules: name, body, the rules the body uses.
    const PRIMITIVES: &[(&str, &str, &[&str])] = &[
        ("space", r#"| " " | "\n" [ \t]{0,20}"#, &[]),
        (
            "value",
            "object | array | string | number | boolean | null",
            &["object", "array", "string", "number", "boolean", "null"],
        ),
        (
            "object",
            r#""{" space ( string space ":" space value ( "," space string space ":" space value )* )? space "}""#,
            &["space", "string", "value"],
        ),
        ("array", r#""[" space ( value ( "," space value )* )? space "]""#, &["space", "value"]),
        ("string", r#""\"" char* "\"""#, &["char"]),
        ("char", r#"[^"\\\x7F\x00-\x1F] | [\\] ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )"#, &[]),
        ("integral-part", "[0] | [1-9] [0-9]{0,15}", &[]),
        ("integer", r#""-"? integral-part"#, &["integral-part"]),
        ("number", r#"integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?"#, &["integer"]),
        ("boolean", r#""true" | "false""#, &[]),
        ("null", r#""null""#, &[]),
        ("date", r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )"#, &[]),
        (
            "time",
            r#"( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#,
            &[],
        ),
        ("date-time", r#"date "T" time"#, &["date", "time"]),
        ("uuid", r#"[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}"#, &[]),
    ];

    fn err(path: &str, problem: impl Into<String>) -> Error {
        Error::JsonSchema { path: path.to_string(), problem: problem.into() }
    }

    /// The JSON pointer of `key` under `path`.
    fn child(path: &str, key: &str) -> String {
        format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
    }

    fn index(path: &str, i: usize) -> String {
        format!("{path}/{i}")
    }

    /// `hint-part`, or `part` at the root.
    fn join(hint: &str, part: &str) -> String {
        if hint.is_empty() { part.to_string() } else { format!("{hint}-{part}") }
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// A non-negative integer (`3` or `3.0`).
    fn count_value(v: &Value) -> Option<u64> {
        v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15).map(|f| f as u64))
    }

    /// A GBNF string literal matching exactly `text`.
    fn literal(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02X}", c as u32);
                }
                c if c.is_ascii() => out.push(c),
                c if (c as u32) <= 0xFFFF => {
                    let _ = write!(out, "\\u{:04X}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08X}", c as u32);
                }
            }
        }
        out.push('"');
        out
    }

    /// A GBNF literal of the JSON text of `v` (compact, keys in their order).
    fn json_literal(v: &Value, path: &str) -> Result<String> {
        let text = serde_json::to_string(v).map_err(|e| err(path, format!("cannot write the value as JSON: {e}")))?;
        Ok(literal(&text))
    }

    /// A rule name: `[a-zA-Z0-9-]+`, other characters replaced by `-`, bounded in length.
    fn sanitize(hint: &str) -> String {
        let mut out = String::new();
        for c in hint.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        if out.len() > 60 {
            // ASCII only, so any byte index is a char boundary.
            out = out[out.len() - 60..].to_string();
        }
        let out = out.trim_matches('-').to_string();
        if out.is_empty() { "rule".to_string() } else { out }
    }

    fn is_name(expr: &str) -> bool {
        !expr.is_empty() && expr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ty {
        Null,
        Boolean,
        Integer,
        Number,
        String,
        Array,
        Object,
    }

    impl Ty {
        fn parse(name: &str) -> Option<Ty> {
            Some(match name {
                "null" => Ty::Null,
                "boolean" => Ty::Boolean,
                "integer" => Ty::Integer,
                "number" => Ty::Number,
                "string" => Ty::String,
                "array" => Ty::Array,
                "object" => Ty::Object,
                _ => return None,
            })
        }

        fn name(self) -> &'static str {
            match self {
                Ty::Null => "null",
                Ty::Boolean => "boolean",
                Ty::Integer => "integer",
                Ty::Number => "number",
                Ty::String => "string",
                Ty::Array => "array",
                Ty::Object => "object",
            }
        }

        fn matches(self, v: &Value) -> bool {
            match self {
                Ty::Null => v.is_null(),
                Ty::Boolean => v.is_boolean(),
                Ty::Integer => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
                Ty::Number => v.is_number(),
                Ty::String => v.is_string(),
                Ty::Array => v.is_array(),
                Ty::Object => v.is_object(),
            }
        }
    }

    /// The types named by `type` (`None` when absent).
    fn parse_types(m: &Map<String, Value>, path: &str) -> Result<Option<Vec<Ty>>> {
        let Some(t) = m.get("type") else { return Ok(None) };
        let tpath = child(path, "type");
        let one = |v: &Value, at: &str| -> Result<Ty> {
            let Some(name) = v.as_str() else {
                return Err(err(at, format!("`type` names must be strings, not {}", kind(v))));
            };
            Ty::parse(name).ok_or_else(|| {
                err(
                    at,
                    format!(
                        "unknown `type` {name:?} (expected \"null\", \"boolean\", \"integer\", \"number\", \
                         \"string\", \"array\" or \"object\")"
                    ),
                )
            })
        };
        match t {
            Value::String(_) => Ok(Some(vec![one(t, &tpath)?])),
            Value::Array(list) => {
                if list.is_empty() {
                    return Err(err(&tpath, "`type` is an empty list: no value is valid"));
                }
                let mut out = Vec::new();
                for (i, v) in list.iter().enumerate() {
                    let ty = one(v, &index(&tpath, i))?;
                    if out.contains(&ty) {
                        return Err(err(&index(&tpath, i), format!("`type` lists {:?} twice", ty.name())));
                    }
                    out.push(ty);
                }
                Ok(Some(out))
            }
            _ => Err(err(&tpath, format!("`type` must be a string or a list of strings, not {}", kind(t)))),
        }
    }

    /// How an object admits properties beyond its `properties`.
    enum Extra<'a> {
        None,
        Any,
        Schema(&'a Value, String),
    }

    /// One `"key": value` element of an object and how often it may appear.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Times {
        Once,
        Optional,
        Any,
    }

    /// The properties of an object (name, schema, pointer) and its required names (name,
    /// pointer of the entry in `required`).
    #[derive(Default)]
    struct ObjectParts<'a> {
        properties: Vec<(String, &'a Value, String)>,
        required: Vec<(String, String)>,
    }

    impl<'a> ObjectParts<'a> {
        fn add_required(&mut self, v: &Value, path: &str) -> Result<()> {
            let Value::Array(list) = v else {
                return Err(err(path, format!("`required` must be a list of property names, not {}", kind(v))));
            };
            for (i, name) in list.iter().enumerate() {
                let Some(name) = name.as_str() else {
                    return Err(err(&index(path, i), format!("`required` names must be strings, not {}", kind(name))));
                };
                if !self.required.iter().any(|(n, _)| n == name) {
                    self.required.push((name.to_string(), index(path, i)));
                }
            }
            Ok(())
        }

        fn add_properties(&mut self, v: &'a Value, path: &str) -> Result<()> {
            let Value::Object(props) = v else {
                return Err(err(path, format!("`properties` must be an object, not {}", kind(v))));
            };
            for (name, schema) in props {
                let at = child(path, name);
                if let Some((_, other, other_at)) = self.properties.iter().find(|(n, _, _)| n == name) {
                    if *other != schema {
                        return Err(err(
                            &at,
                            format!(
                                "property {name:?} is also defined at {other_at} with a different schema; merging \
                                 two schemas of one property (`allOf`) is not supported"
                            ),
                        ));
                    }
                    continue;
                }
                self.properties.push((name.clone(), schema, at));
            }
            Ok(())
        }
    }

    struct Converter<'a> {
        doc: &'a Value,
        /// The rules in order of creation (`root` first); a `$ref`'s rule is created empty and
        /// filled once its definition is converted.
        rules: Vec<(String, String)>,
        taken: HashSet<String>,
        by_body: HashMap<String, String>,
        primitives: HashSet<&'static str>,
        /// `$ref` target pointer -> its rule.
        refs: HashMap<String, String>,
        /// The pointer of the referenced definition whose rule is being written while nothing
        /// has been matched yet (its leftmost position), if any.
        leftmost: Option<String>,
        /// `(from, to, path of the $ref)`: the rule of `from` can start with the rule of `to`.
        left_edges: Vec<(String, String, String)>,
    }

    pub(super) fn convert(text: &str) -> Result<String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json stops at 128 nested arrays/objects and calls that a recursion limit.
            if e.to_string().starts_with("recursion limit exceeded") {
                err("", format!("the schema nests arrays and objects deeper than serde_json reads (128 levels): {e}"))
            } else {
                err("", format!("the schema is not valid JSON: {e}"))
            }
        })?;
        if !doc.is_object() && !doc.is_boolean() {
            return Err(err("", format!("a JSON Schema must be an object or a boolean, not {}", kind(&doc))));
        }
        let mut c = Converter {
            doc: &doc,
            rules: vec![("root".to_string(), String::new())],
            taken: PRIMITIVES.iter().map(|(n, _, _)| n.to_string()).chain(["root".to_string()]).collect(),
            by_body: HashMap::new(),
            primitives: HashSet::new(),
            refs: HashMap::from([(String::new(), "root".to_string())]),
            leftmost: Some(String::new()),
            left_edges: Vec::new(),
        };
        let body = c.visit(&doc, "", "", 0)?;
        if let Some(root) = c.rules.first_mut() {
            root.1 = body;
        }
        c.check_left_recursion()?;
        let mut out = String::new();
        for (name, body) in &c.rules {
            let _ = writeln!(out, "{name} ::= {body}");
        }
        // A last guard: whatever this converter writes must be a grammar llama.cpp accepts.
        check_gbnf(&out)
            .map_err(|e| err("", format!("the converted grammar is refused ({e}); this is a bug of the converter")))?;
        Ok(out)
    }

    impl<'a> Converter<'a> {
        fn fresh_name(&mut self, hint: &str) -> String {
            let base = sanitize(hint);
            let mut name = base.clone();
            let mut i = 2;
            while self.taken.contains(&name) {
                name = format!("{base}-{i}");
                i += 1;
            }
            self.taken.insert(name.clone());
            name
        }

        /// A rule with `body` (an existing one with the same body when there is one).
        fn add_rule(&mut self, hint: &str, body: String) -> String {
            if let Some(name) = self.by_body.get(&body) {
                return name.clone();
            }
            let name = self.fresh_name(hint);
            self.by_body.insert(body.clone(), name.clone());
            self.rules.push((name.clone(), body));
            name
        }

        /// The fixed rule `name`, added with what it uses.
        fn prim(&mut self, name: &'static str) -> String {
            let mut todo = vec![name];
            while let Some(n) = todo.pop() {
                if !self.primitives.insert(n) {
                    continue;
                }
                if let Some((_, body, deps)) = PRIMITIVES.iter().find(|(p, _, _)| *p == n) {
                    self.rules.push((n.to_string(), body.to_string()));
                    todo.extend(deps.iter().copied());
                }
            }
            name.to_string()
        }

        fn space(&mut self) -> String {
            self.prim("space")
        }

        /// `visit`, as one rule name.
        fn atom(&mut self, s: &'a Value, path: &str, hint: &str, depth: usize) -> Result<String> {
            let expr = self.visit(s, path, hint, depth)?;
            Ok(self.name_of(expr, hint))
        }

        fn name_of(&mut self, expr: String, hint: &str) -> String {
            if is_name(&expr) { expr } else { self.add_rule(hint, expr) }
        }

        /// A GBNF expression for schema `s` at `path`.
        fn visit(&mut self, s: &'a Value, path: &str, hint: &str, depth: usize) -> Result<String> {
            if depth > MAX_SCHEMA_DEPTH {
                return Err(err(path, format!("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")));
            }
            let m = match s {
                Value::Bool(true) => return Ok(self.prim("value")),
                Value::Bool(false) => return Err(err(path, "the schema `false` admits no value")),
                Value::Object(m) => m,
                _ => return Err(err(path, format!("a schema must be an object or a boolean, not {}", kind(s)))),
            };
            for k in m.keys() {
                if UNSUPPORTED.contains(&k.as_str()) {
                    return Err(err(
                        &child(path, k),
                        format!("`{k}` is not supported by the conversion to a grammar (it would be ignored)"),
                    ));
                }
            }
            let constraining: Vec<&str> = m
                .iter()
                .filter(|(k, v)| {
                    !ANNOTATIONS.contains(&k.as_str())
                        && (k.as_str() != "format" || v.as_str().is_some_and(|f| FORMATS.contains(&f)))
                })
                .map(|(k, _)| k.as_str())
                .collect();
            let alone = |keyword: &str, allowed: &[&str]| -> Result<()> {
                match constraining.iter().find(|k| **k != keyword && !allowed.contains(k) && is_known(k)) {
                    Some(other) => Err(err(
                        &child(path, other),
                        format!("`{keyword}` together with `{other}` is not supported (both would have to hold)"),
                    )),
                    None => Ok(()),
                }
            };

            if let Some(r) = m.get("$ref") {
                alone("$ref", &[])?;
                return self.reference(r, &child(path, "$ref"), depth);
            }
            if m.contains_key("anyOf") || m.contains_key("oneOf") {
                let key = if m.contains_key("anyOf") { "anyOf" } else { "oneOf" };
                alone(key, &[])?;
                let Some(list) = m.get(key) else { return Err(err(path, format!("`{key}` is missing"))) };
                return self.alternatives(list, &child(path, key), key, hint, depth);
            }
            if let Some(all) = m.get("allOf") {
                return self.all_of(m, all, path, hint, depth);
            }
            let types = parse_types(m, path)?;
            if m.contains_key("enum") || m.contains_key("const") {
                alone(if m.contains_key("enum") { "enum" } else { "const" }, &["enum", "const", "type"])?;
                return self.literals(m, types.as_deref(), path);
            }
            let types = match types {
                Some(t) => t,
                None => {
                    // Keywords apply to values of their type; like llama.cpp, the schema is
                    // taken to be about the type its keywords are for.
                    let mut t = Vec::new();
                    let has = |list: &[&str]| list.iter().any(|k| m.contains_key(*k));
                    if has(OBJECT_KEYWORDS) {
                        t.push(Ty::Object);
                    }
                    if has(ARRAY_KEYWORDS) {
                        t.push(Ty::Array);
                    }
                    if has(STRING_KEYWORDS) || constraining.contains(&"format") {
                        t.push(Ty::String);
                    }
                    if has(RANGE_KEYWORDS) {
                        t.push(Ty::Number);
                    }
                    if t.is_empty() {
                        return Ok(self.prim("value"));
                    }
                    t
                }
            };
            if let [one] = types[..] {
                return self.typed(one, m, path, hint, depth);
            }
            let mut alts = Vec::new();
            for t in types {
                let h = join(hint, t.name());
                let expr = self.typed(t, m, path, &h, depth)?;
                alts.push(self.name_of(expr, &h));
            }
            Ok(alts.join(" | "))
        }

        fn typed(&mut self, t: Ty, m: &'a Map<String, Value>, path: &str, hint: &str, depth: usize) -> Result<String> {
            match t {
                Ty::Null => Ok(self.prim("null")),
                Ty::Boolean => Ok(self.prim("boolean")),
                Ty::Integer => self.integer(m, path),
                Ty::Number => {
                    if let Some(k) = RANGE_KEYWORDS.iter().find(|k| m.contains_key(**k)) {
                        return Err(err(
                            &child(path, k),
                            format!("`{k}` is supported only for `\"type\": \"integer\"`, not for numbers"),
                        ));
                    }
                    Ok(self.prim("number"))
                }
                Ty::String => self.string(m, path),
                Ty::Array => self.array(m, path, hint, depth),
                Ty::Object => {
                    let mut parts = ObjectParts::default();
                    if let Some(p) = m.get("properties") {
                        parts.add_properties(p, &child(path, "properties"))?;
                    }
                    if let Some(r) = m.get("required") {
                        parts.add_required(r, &child(path, "required"))?;
                    }
                    let extra = match m.get("additionalProperties") {
                        None | Some(Value::Bool(false)) => Extra::None,
                        Some(Value::Bool(true)) => Extra::Any,
                        Some(v @ Value::Object(_)) => Extra::Schema(v, child(path, "additionalProperties")),
                        Some(v) => {
                            return Err(err(
                                &child(path, "additionalProperties"),
                                format!("`additionalProperties` must be a boolean or a schema, not {}", kind(v)),
                            ));
                        }
                    };
                    if parts.properties.is_empty()
                        && parts.required.is_empty()
                        && !matches!(m.get("additionalProperties"), Some(Value::Bool(false)) | Some(Value::Object(_)))
                    {
                        return Ok(self.prim("object"));
                    }
                    self.object(parts, extra, hint, depth)
                }
            }
        }

        /// `$ref` (at `path`) to a pointer into the document: the rule of its target.
        fn reference(&mut self, r: &Value, path: &str, depth: usize) -> Result<String> {
            let (pointer, target) = self.resolve(r, path)?;
            if let Some(from) = &self.leftmost {
                self.left_edges.push((from.clone(), pointer.clone(), path.to_string()));
            }
            if let Some(name) = self.refs.get(&pointer) {
                return Ok(name.clone());
            }
            let last = pointer.rsplit('/').next().unwrap_or("").replace("~1", "/").replace("~0", "~");
            let name = self.fresh_name(&last);
            self.refs.insert(pointer.clone(), name.clone());
            let slot = self.rules.len();
            self.rules.push((name.clone(), String::new()));
            let saved = self.leftmost.replace(pointer.clone());
            let body = self.visit(target, &pointer, &name, depth + 1);
            self.leftmost = saved;
            let body = body?;
            if let Some(rule) = self.rules.get_mut(slot) {
                rule.1 = body;
            }
            Ok(name)
        }

        /// The pointer a `$ref` names and the schema there.
        fn resolve(&self, r: &Value, path: &str) -> Result<(String, &'a Value)> {
            let Some(r) = r.as_str() else {
                return Err(err(path, format!("`$ref` must be a string, not {}", kind(r))));
            };
            let Some(fragment) = r.strip_prefix('#') else {
                return Err(err(
                    path,
                    format!(
                        "`$ref` {r:?} is not a local reference: only `#` and `#/...` pointers into this schema are \
                         supported"
                    ),
                ));
            };
            let pointer =
                percent_decode(fragment).ok_or_else(|| err(path, format!("`$ref` {r:?} has an invalid %-escape")))?;
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(err(
                    path,
                    format!("`$ref` {r:?} names an anchor; only `#` and `#/...` JSON pointers are supported"),
                ));
            }
            let target = self
                .doc
                .pointer(&pointer)
                .ok_or_else(|| err(path, format!("`$ref` {r:?} points nowhere in the schema")))?;
            Ok((pointer, target))
        }

        /// `anyOf` / `oneOf` (at `path`): alternatives.
        fn alternatives(&mut self, list: &'a Value, path: &str, key: &str, hint: &str, depth: usize) -> Result<String> {
            let Value::Array(list) = list else {
                return Err(err(path, format!("`{key}` must be a list of schemas, not {}", kind(list))));
            };
            if list.is_empty() {
                return Err(err(path, format!("`{key}` is an empty list: no value is valid")));
            }
            let mut alts = Vec::new();
            for (i, alt) in list.iter().enumerate() {
                let h = if hint.is_empty() { format!("alt-{i}") } else { format!("{hint}-{i}") };
                let name = self.atom(alt, &index(path, i), &h, depth + 1)?;
                if !alts.contains(&name) {
                    alts.push(name);
                }
            }
            Ok(alts.join(" | "))
        }

        /// `allOf`: a single member as itself, object schemas merged into one object.
        fn all_of(
            &mut self,
            m: &'a Map<String, Value>,
            all: &'a Value,
            path: &str,
            hint: &str,
            depth: usize,
        ) -> Result<String> {
            let apath = child(path, "allOf");
            let Value::Array(list) = all else {
                return Err(err(&apath, format!("`allOf` must be a list of schemas, not {}", kind(all))));
            };
            if list.is_empty() {
                return Err(err(&apath, "`allOf` is an empty list"));
            }
            let siblings = m.keys().any(|k| k != "allOf" && !ANNOTATIONS.contains(&k.as_str()) && is_known(k));
            if let [only] = &list[..]
                && !siblings
            {
                return self.visit(only, &index(&apath, 0), hint, depth + 1);
            }
            let mut parts = ObjectParts::default();
            self.merge(m, path, depth, &mut parts)?;
            self.object(parts, Extra::None, hint, depth)
        }

        /// Adds an object schema (an `allOf` member) to `parts`.
        fn merge(
            &self,
            m: &'a Map<String, Value>,
            path: &str,
            depth: usize,
            parts: &mut ObjectParts<'a>,
        ) -> Result<()> {
            if depth > MAX_SCHEMA_DEPTH {
                return Err(err(path, format!("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")));
            }
            for (k, v) in m {
                let at = child(path, k);
                match k.as_str() {
                    "$ref" => {
                        let (pointer, target) = self.resolve(v, &at)?;
                        self.merge_schema(target, &pointer, depth + 1, parts)?;
                    }
                    "allOf" => {
                        let Value::Array(list) = v else {
                            return Err(err(&at, format!("`allOf` must be a list of schemas, not {}", kind(v))));
                        };
                        for (i, s) in list.iter().enumerate() {
                            self.merge_schema(s, &index(&at, i), depth + 1, parts)?;
                        }
                    }
                    "type" => {
                        if parse_types(m, path)?.as_deref() != Some(&[Ty::Object]) {
                            return Err(err(&at, "`allOf` can merge only object schemas (`\"type\": \"object\"`)"));
                        }
                    }
                    "properties" => parts.add_properties(v, &at)?,
                    "required" => parts.add_required(v, &at)?,
                    "additionalProperties" => {
                        if v != &Value::Bool(false) {
                            return Err(err(
                                &at,
                                "`additionalProperties` other than `false` inside `allOf` is not supported (the \
                                 merged object admits only the listed properties)",
                            ));
                        }
                    }
                    k if ANNOTATIONS.contains(&k) || !is_known(k) => {}
                    k if k == "format" && !v.as_str().is_some_and(|f| FORMATS.contains(&f)) => {}
                    k => {
                        return Err(err(
                            &at,
                            format!(
                                "`allOf` can merge only object schemas (`properties`, `required`); `{k}` in a member \
                                 is not supported"
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }

        fn merge_schema(&self, s: &'a Value, path: &str, depth: usize, parts: &mut ObjectParts<'a>) -> Result<()> {
            match s {
                Value::Bool(true) => Ok(()),
                Value::Object(m) => self.merge(m, path, depth, parts),
                Value::Bool(false) => Err(err(path, "the schema `false` admits no value")),
                _ => Err(err(path, format!("a schema must be an object or a boolean, not {}", kind(s)))),
            }
        }

        /// `enum` and/or `const`: the values as literals (those of the `type`, when given).
        fn literals(&mut self, m: &'a Map<String, Value>, types: Option<&[Ty]>, path: &str) -> Result<String> {
            let mut values: Vec<(&Value, String)> = Vec::new();
            if let Some(e) = m.get("enum") {
                let epath = child(path, "enum");
                let Value::Array(list) = e else {
                    return Err(err(&epath, format!("`enum` must be a list of values, not {}", kind(e))));
                };
                if list.is_empty() {
                    return Err(err(&epath, "`enum` is an empty list: no value is valid"));
                }
                values.extend(list.iter().enumerate().map(|(i, v)| (v, index(&epath, i))));
            }
            if let Some(c) = m.get("const") {
                let cpath = child(path, "const");
                if m.contains_key("enum") {
                    if !values.iter().any(|(v, _)| *v == c) {
                        return Err(err(&cpath, "`const` is not one of the `enum` values: no value is valid"));
                    }
                    values.clear();
                }
                values.push((c, cpath));
            }
            let mut alts = Vec::new();
            for (v, at) in values {
                if types.is_some_and(|t| !t.iter().any(|t| t.matches(v))) {
                    continue;
                }
                let lit = json_literal(v, &at)?;
                if !alts.contains(&lit) {
                    alts.push(lit);
                }
            }
            if alts.is_empty() {
                return Err(err(&child(path, "type"), "no `enum`/`const` value is of the `type`: no value is valid"));
            }
            Ok(alts.join(" | "))
        }

        fn string(&mut self, m: &Map<String, Value>, path: &str) -> Result<String> {
            let min = bounded_count(m, "minLength", path)?;
            let max = bounded_count(m, "maxLength", path)?;
            if let Some(format) = m.get("format").and_then(Value::as_str).filter(|f| FORMATS.contains(f)) {
                if let Some(k) = STRING_KEYWORDS.iter().find(|k| m.contains_key(**k)) {
                    return Err(err(
                        &child(path, k),
                        format!("`{k}` together with `format` {format:?} is not supported"),
                    ));
                }
                let rule = match format {
                    "date" => self.prim("date"),
                    "time" => self.prim("time"),
                    "date-time" => self.prim("date-time"),
                    _ => self.prim("uuid"),
                };
                return Ok(format!("\"\\\"\" {rule} \"\\\"\""));
            }
            let (min, max) = (min.unwrap_or(0), max);
            if let Some(max) = max
                && min > max
            {
                return Err(err(
                    &child(path, "minLength"),
                    format!("`minLength` {min} is above `maxLength` {max}: no string is valid"),
                ));
            }
            if min == 0 && max.is_none() {
                return Ok(self.prim("string"));
            }
            let c = self.prim("char");
            let chars = repetition(&c, min, max);
            Ok(if chars.is_empty() { "\"\\\"\\\"\"".to_string() } else { format!("\"\\\"\" {chars} \"\\\"\"") })
        }

        fn integer(&mut self, m: &Map<String, Value>, path: &str) -> Result<String> {
            let lo = int_bound(m, "minimum", "exclusiveMinimum", path, true)?;
            let hi = int_bound(m, "maximum", "exclusiveMaximum", path, false)?;
            if lo.is_none() && hi.is_none() {
                return Ok(self.prim("integer"));
            }
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo > hi
            {
                let at = if m.contains_key("minimum") { "minimum" } else { "exclusiveMinimum" };
                return Err(err(
                    &child(path, at),
                    format!("the integer range is empty (from {lo} to {hi}): no value is valid"),
                ));
            }
            Ok(int_range(lo, hi))
        }

        fn array(&mut self, m: &'a Map<String, Value>, path: &str, hint: &str, depth: usize) -> Result<String> {
            // The positional schemas and the schema of the items after them.
            let (prefix, prefix_path, rest, rest_path): (&'a [Value], String, Option<&'a Value>, String) =
                match (m.get("prefixItems"), m.get("items")) {
                    (Some(p), items) => {
                        let ppath = child(path, "prefixItems");
                        let Value::Array(p) = p else {
                            return Err(err(
                                &ppath,
                                format!("`prefixItems` must be a list of schemas, not {}", kind(p)),
                            ));
                        };
                        if let Some(i @ Value::Array(_)) = items {
                            return Err(err(
                                &child(path, "items"),
                                format!("with `prefixItems`, `items` must be a schema, not {}", kind(i)),
                            ));
                        }
                        (p, ppath, items, child(path, "items"))
                    }
                    (None, Some(Value::Array(p))) => {
                        (p, child(path, "items"), m.get("additionalItems"), child(path, "additionalItems"))
                    }
                    (None, items) => (&[], String::new(), Some(items.unwrap_or(&TRUE)), child(path, "items")),
                };
            let k = prefix.len() as u64;
            let bounds = m.contains_key("minItems") || m.contains_key("maxItems");
            if k == 0 && !bounds && rest.is_none_or(|r| *r == Value::Bool(true)) {
                return Ok(self.prim("array"));
            }
            let min = bounded_count(m, "minItems", path)?.unwrap_or(0);
            let mut max = bounded_count(m, "maxItems", path)?;
            if let Some(max) = max
                && min > max
            {
                return Err(err(
                    &child(path, "minItems"),
                    format!("`minItems` {min} is above `maxItems` {max}: no array is valid"),
                ));
            }
            let saved = self.leftmost.take();
            let r = (|| {
                let rest = match rest {
                    None | Some(Value::Bool(false)) => None,
                    Some(s) => Some(self.atom(s, &rest_path, &join(hint, "item"), depth + 1)?),
                };
                if rest.is_none() {
                    max = Some(max.map_or(k, |m| m.min(k)));
                    if min > k {
                        return Err(err(
                            &child(path, "minItems"),
                            format!("`minItems` {min} is more than the {k} items the tuple admits"),
                        ));
                    }
                }
                let mut items = Vec::new();
                for (i, s) in prefix.iter().enumerate() {
                    if max.is_some_and(|m| i as u64 >= m) {
                        break;
                    }
                    items.push(self.atom(s, &index(&prefix_path, i), &join(hint, &format!("tuple-{i}")), depth + 1)?);
                }
                self.array_rule(&items, rest.as_deref(), min, max, hint)
            })();
            self.leftmost = saved;
            r
        }

        /// `[`, between `min` and `max` items (the first ones `prefix`, then `rest`), `]`.
        fn array_rule(
            &mut self,
            prefix: &[String],
            rest: Option<&str>,
            min: u64,
            max: Option<u64>,
            hint: &str,
        ) -> Result<String> {
            let sp = self.space();
            if max == Some(0) {
                return Ok(format!("\"[\" {sp} \"]\""));
            }
            let list = self.item_list(prefix, rest, min.max(1), max, hint);
            Ok(if min == 0 {
                let list = self.name_of(list, &join(hint, "items"));
                format!("\"[\" {sp} {list}? {sp} \"]\"")
            } else {
                format!("\"[\" {sp} {list} {sp} \"]\"")
            })
        }

        /// At least `min` (>= 1) items, at most `max`, comma-separated.
        fn item_list(
            &mut self,
            prefix: &[String],
            rest: Option<&str>,
            min: u64,
            max: Option<u64>,
            hint: &str,
        ) -> String {
            let k = prefix.len() as u64;
            let sep = |first: bool| if first { "" } else { "\",\" space " };
            let mut parts: Vec<String> = Vec::new();
            let mut emitted = 0u64;
            for p in prefix.iter().take(min.min(k) as usize) {
                parts.push(format!("{}{p}", sep(emitted == 0)));
                emitted += 1;
            }
            if let Some(r) = rest
                && min > k
            {
                let mut c = min - k;
                if emitted == 0 {
                    parts.push(r.to_string());
                    c -= 1;
                }
                match c {
                    0 => {}
                    1 => parts.push(format!("\",\" space {r}")),
                    c => parts.push(format!("( \",\" space {r} ){{{c}}}")),
                }
            }
            // The optional items: the rest of the prefix (each only after the one before),
            // then further `rest` items.
            let mut after = match rest {
                Some(r) => {
                    let done = min.max(k);
                    match max.map(|m| m.saturating_sub(done)) {
                        None => format!("( \",\" space {r} )*"),
                        Some(0) => String::new(),
                        Some(1) => format!("( \",\" space {r} )?"),
                        Some(n) => format!("( \",\" space {r} ){{0,{n}}}"),
                    }
                }
                None => String::new(),
            };
            let upto = max.map_or(k, |m| m.min(k));
            for i in (min.min(k)..upto).rev() {
                let Some(p) = prefix.get(i as usize) else { continue };
                let body =
                    if after.is_empty() { format!("\",\" space {p}") } else { format!("\",\" space {p} {after}") };
                after = format!("{}?", self.add_rule(&join(hint, &format!("tuple-{i}-on")), body));
            }
            if !after.is_empty() {
                parts.push(after);
            }
            parts.join(" ")
        }

        /// `{`, the properties in their order (required ones once, optional ones at most once,
        /// further ones per `extra`), `}`.
        fn object(&mut self, parts: ObjectParts<'a>, extra: Extra<'a>, hint: &str, depth: usize) -> Result<String> {
            let sp = self.space();
            let saved = self.leftmost.take();
            let r = (|| {
                for (name, at) in &parts.required {
                    if !parts.properties.iter().any(|(n, _, _)| n == name) {
                        return Err(err(
                            at,
                            format!(
                                "required property {name:?} is not in `properties` (the grammar admits only listed \
                                 properties)"
                            ),
                        ));
                    }
                }
                let mut elems: Vec<(String, Times)> = Vec::new();
                for (name, schema, at) in &parts.properties {
                    let required = parts.required.iter().find(|(n, _)| n == name);
                    if **schema == Value::Bool(false) {
                        if let Some((_, rat)) = required {
                            return Err(err(rat, format!("property {name:?} is required but its schema is `false`")));
                        }
                        continue;
                    }
                    let h = join(hint, name);
                    let value = self.atom(schema, at, &h, depth + 1)?;
                    let key = json_literal(&Value::String(name.clone()), at)?;
                    let kv = self.add_rule(&join(&h, "kv"), format!("{key} {sp} \":\" {sp} {value}"));
                    elems.push((kv, if required.is_some() { Times::Once } else { Times::Optional }));
                }
                let extra_value = match extra {
                    Extra::None => None,
                    Extra::Any => Some(self.prim("value")),
                    Extra::Schema(s, at) => Some(self.atom(s, &at, &join(hint, "additional"), depth + 1)?),
                };
                if let Some(v) = extra_value {
                    let key = self.prim("string");
                    let kv = self.add_rule(&join(hint, "additional-kv"), format!("{key} {sp} \":\" {sp} {v}"));
                    elems.push((kv, Times::Any));
                }
                Ok(self.object_body(&elems, hint))
            })();
            self.leftmost = saved;
            let body = r?;
            Ok(format!("\"{{\" {sp} {body}{}\"}}\"", if body.is_empty() { String::new() } else { format!(" {sp} ") }))
        }

        fn object_body(&mut self, elems: &[(String, Times)], hint: &str) -> String {
            let tail = |kv: &str, t: Times| match t {
                Times::Once => format!("\",\" space {kv}"),
                Times::Optional => format!("( \",\" space {kv} )?"),
                Times::Any => format!("( \",\" space {kv} )*"),
            };
            if let Some(first) = elems.iter().position(|(_, t)| *t == Times::Once) {
                // Optional ones before the first required one are each followed by a comma.
                let mut parts = Vec::new();
                for (kv, t) in elems.iter().take(first) {
                    parts.push(format!("( {kv} \",\" space ){}", if *t == Times::Any { "*" } else { "?" }));
                }
                for (i, (kv, t)) in elems.iter().enumerate().skip(first) {
                    parts.push(if i == first { kv.clone() } else { tail(kv, *t) });
                }
                return parts.join(" ");
            }
            // All optional: one alternative per first property present, each followed by the
            // optional ones after it (`rest` rules, shared).
            let mut rests: Vec<String> = vec![String::new(); elems.len() + 1];
            for i in (1..elems.len()).rev() {
                let Some((kv, t)) = elems.get(i) else { continue };
                let next = rests.get(i + 1).cloned().unwrap_or_default();
                let body = if next.is_empty() { tail(kv, *t) } else { format!("{} {next}", tail(kv, *t)) };
                let name = self.add_rule(&join(hint, &format!("rest-{i}")), body);
                if let Some(r) = rests.get_mut(i) {
                    *r = name;
                }
            }
            let mut alts = Vec::new();
            for (i, (kv, t)) in elems.iter().enumerate() {
                let mut alt = kv.clone();
                if *t == Times::Any {
                    alt.push(' ');
                    alt.push_str(&tail(kv, Times::Any));
                }
                if let Some(next) = rests.get(i + 1).filter(|n| !n.is_empty()) {
                    alt.push(' ');
                    alt.push_str(next);
                }
                alts.push(alt);
            }
            if alts.is_empty() { String::new() } else { format!("( {} )?", alts.join(" | ")) }
        }

        /// Refuses a `$ref` cycle that matches nothing before coming back (left recursion).
        fn check_left_recursion(&self) -> Result<()> {
            let mut out: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
            let mut indegree: HashMap<&str, usize> = HashMap::new();
            for (from, to, at) in &self.left_edges {
                out.entry(from).or_default().push((to, at));
                indegree.entry(from).or_default();
                *indegree.entry(to).or_default() += 1;
            }
            // Kahn: remove the rules nothing left-recursive leads to.
            let mut ready: Vec<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
            while let Some(n) = ready.pop() {
                indegree.remove(n);
                for (to, _) in out.get(n).map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(d) = indegree.get_mut(to) {
                        *d -= 1;
                        if *d == 0 {
                            ready.push(to);
                        }
                    }
                }
            }
            // What is left lies on or after a cycle: every left node has a left predecessor.
            // Walk predecessors until a node repeats: that edge closes a cycle.
            let Some(mut node) = indegree.keys().min().copied() else { return Ok(()) };
            let mut seen = HashSet::new();
            loop {
                seen.insert(node);
                let pred =
                    self.left_edges.iter().find(|(from, to, _)| to == node && indegree.contains_key(from.as_str()));
                let Some((from, to, at)) = pred else { return Ok(()) };
                if seen.contains(from.as_str()) {
                    let show = |p: &str| if p.is_empty() { "#".to_string() } else { format!("#{p}") };
                    return Err(err(
                        at,
                        format!(
                            "`$ref` {:?} leads back to {:?} before any text is matched (left recursion, which \
                             llama.cpp's grammars cannot express): recurse only inside an object or an array",
                            show(to),
                            show(from)
                        ),
                    ));
                }
                node = from;
            }
        }
    }

    /// Whether a keyword is one this converter knows (the others are extensions: ignored).
    fn is_known(k: &str) -> bool {
        matches!(k, "type" | "enum" | "const" | "anyOf" | "oneOf" | "allOf" | "$ref" | "format")
            || OBJECT_KEYWORDS.contains(&k)
            || ARRAY_KEYWORDS.contains(&k)
            || STRING_KEYWORDS.contains(&k)
            || RANGE_KEYWORDS.contains(&k)
            || UNSUPPORTED.contains(&k)
    }

    /// A count keyword (`minLength`, `maxItems`...): a non-negative integer within what one
    /// grammar repetition can express.
    fn bounded_count(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>> {
        let Some(v) = m.get(key) else { return Ok(None) };
        let at = child(path, key);
        let n = count_value(v).ok_or_else(|| err(&at, format!("`{key}` must be a non-negative integer, not {v}")))?;
        if n > MAX_COUNT {
            return Err(err(
                &at,
                format!(
                    "`{key}` {n} is above {MAX_COUNT}, the most a grammar repetition can count (llama.cpp's limit is \
                     {MAX_REPETITIONS})"
                ),
            ));
        }
        Ok(Some(n))
    }

    /// `item{min,max}` in its short forms (empty for none).
    fn repetition(item: &str, min: u64, max: Option<u64>) -> String {
        match (min, max) {
            (_, Some(0)) => String::new(),
            (0, None) => format!("{item}*"),
            (1, None) => format!("{item}+"),
            (n, None) => format!("{item}{{{n},}}"),
            (0, Some(1)) => format!("{item}?"),
            (1, Some(1)) => item.to_string(),
            (n, Some(m)) if n == m => format!("{item}{{{n}}}"),
            (n, Some(m)) => format!("{item}{{{n},{m}}}"),
        }
    }

    /// The lower (`lower`) or upper integer bound from `inclusive` / `exclusive` (a number, or
    /// draft 4's boolean modifying `inclusive`).
    fn int_bound(
        m: &Map<String, Value>,
        inclusive: &str,
        exclusive: &str,
        path: &str,
        lower: bool,
    ) -> Result<Option<i64>> {
        let to_int = |v: &Value, key: &str, strict: bool| -> Result<i64> {
            let at = child(path, key);
            let bad = || err(&at, format!("`{key}` must be a number within the 64-bit integer range, not {v}"));
            let n = if let Some(i) = v.as_i64() {
                i as i128
            } else if let Some(u) = v.as_u64() {
                u as i128
            } else {
                let f = v.as_f64().filter(|f| f.is_finite() && f.abs() < 9.2e18).ok_or_else(bad)?;
                let r = if lower { f.floor() } else { f.ceil() };
                if r != f {
                    // A fractional bound: the nearest integer inside it, however strict.
                    return Ok(if lower { r as i64 + 1 } else { r as i64 - 1 });
                }
                r as i128
            };
            let n = if strict { if lower { n + 1 } else { n - 1 } } else { n };
            i64::try_from(n).map_err(|_| bad())
        };
        let mut bound: Option<i64> = None;
        let mut tighten = |b: i64| {
            bound = Some(match bound {
                None => b,
                Some(old) if lower => old.max(b),
                Some(old) => old.min(b),
            });
        };
        let draft4_strict = match m.get(exclusive) {
            Some(Value::Bool(b)) => {
                if !m.contains_key(inclusive) && *b {
                    return Err(err(
                        &child(path, exclusive),
                        format!("`{exclusive}: true` (draft 4) needs `{inclusive}`"),
                    ));
                }
                *b
            }
            Some(v) if v.is_number() => {
                tighten(to_int(v, exclusive, true)?);
                false
            }
            Some(v) => {
                return Err(err(&child(path, exclusive), format!("`{exclusive}` must be a number, not {}", kind(v))));
            }
            None => false,
        };
        if let Some(v) = m.get(inclusive) {
            if !v.is_number() {
                return Err(err(&child(path, inclusive), format!("`{inclusive}` must be a number, not {}", kind(v))));
            }
            tighten(to_int(v, inclusive, draft4_strict)?);
        }
        Ok(bound)
    }

    /// The integers from `lo` to `hi` (each unbounded when `None`), in JSON.
    fn int_range(lo: Option<i64>, hi: Option<i64>) -> String {
        let mut alts = Vec::new();
        if lo.is_none_or(|l| l < 0) {
            // Negative values: their magnitudes, from max(1, -hi) to -lo.
            let mag_lo = match hi {
                Some(h) if h < 0 => h.unsigned_abs(),
                _ => 1,
            };
            let mag_hi = lo.map(i64::unsigned_abs);
            alts.push(format!("\"-\" ( {} )", naturals(mag_lo, mag_hi).join(" | ")));
        }
        if hi.is_none_or(|h| h >= 0) {
            let a = lo.map_or(0, |l| l.max(0) as u64);
            alts.extend(naturals(a, hi.map(|h| h as u64)));
        }
        alts.join(" | ")
    }

    /// Alternatives for the naturals from `a` to `b` (at most `MAX_INT_DIGITS` digits when
    /// unbounded), without leading zeros.
    fn naturals(a: u64, b: Option<u64>) -> Vec<String> {
        let la = a.to_string().len();
        let mut alts = Vec::new();
        let pow = |d: usize| 10u64.checked_pow(d as u32);
        match b {
            Some(b) => {
                let lb = b.to_string().len();
                for len in la..=lb {
                    let lo = if len == la { a } else { pow(len - 1).unwrap_or(u64::MAX) };
                    let hi = if len == lb { b } else { pow(len).map_or(u64::MAX, |p| p - 1) };
                    alts.push(same_length(lo.to_string().as_bytes(), hi.to_string().as_bytes()));
                }
            }
            None => {
                let top = "9".repeat(la);
                alts.push(same_length(a.to_string().as_bytes(), top.as_bytes()));
                if la < MAX_INT_DIGITS {
                    let (from, to) = (la, MAX_INT_DIGITS - 1);
                    alts.push(if from == to {
                        format!("[1-9] [0-9]{{{from}}}")
                    } else {
                        format!("[1-9] [0-9]{{{from},{to}}}")
                    });
                }
            }
        }
        alts
    }

    /// The digit strings from `a` to `b`, both of one length, `a <= b`.
    fn same_length(a: &[u8], b: &[u8]) -> String {
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let prefix = a.get(..common).map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
        let (Some(a), Some(b)) = (a.get(common..), b.get(common..)) else { return format!("\"{prefix}\"") };
        let (Some(&a0), Some(&b0)) = (a.first(), b.first()) else { return format!("\"{prefix}\"") };
        let lead = if prefix.is_empty() { String::new() } else { format!("\"{prefix}\" ") };
        let rest = a.len() - 1;
        if rest == 0 {
            return format!("{lead}[{}-{}]", a0 as char, b0 as char);
        }
        let (a_rest, b_rest) = (a.get(1..).unwrap_or(&[]), b.get(1..).unwrap_or(&[]));
        let a_low = a_rest.iter().all(|&c| c == b'0');
        let b_high = b_rest.iter().all(|&c| c == b'9');
        let mut alts = Vec::new();
        let (mut from, mut to) = (a0, b0);
        if !a_low {
            alts.push(format!("\"{}\" {}", a0 as char, same_length(a_rest, "9".repeat(rest).as_bytes())));
            from += 1;
        }
        let mut top = None;
        if !b_high {
            top = Some(format!("\"{}\" {}", b0 as char, same_length("0".repeat(rest).as_bytes(), b_rest)));
            to -= 1;
        }
        if from <= to {
            let digits = if rest == 1 { "[0-9]".to_string() } else { format!("[0-9]{{{rest}}}") };
            alts.push(format!("[{}-{}] {digits}", from as char, to as char));
        }
        alts.extend(top);
        match &alts[..] {
            [one] => format!("{lead}{one}"),
            _ => format!("{lead}( {} )", alts.join(" | ")),
        }
    }

    /// `%XX` escapes of a URI fragment decoded.
    fn percent_decode(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }
}

#[cfg(all(test, feature = "json-schema"))]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::sampling::check_gbnf;

    /// Converts, checks with `check_gbnf`, returns the grammar.
    fn ok(schema: &str) -> String {
        let g = json_schema_to_gbnf(schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        check_gbnf(&g).unwrap_or_else(|e| panic!("{schema}:\n{g}\n{e}"));
        assert!(g.starts_with("root ::= "), "{g}");
        g
    }

    /// The error's path and problem; the problem must mention every word.
    fn bad(schema: &str, path: &str, words: &[&str]) {
        match json_schema_to_gbnf(schema) {
            Err(Error::JsonSchema { path: p, problem }) => {
                assert_eq!(p, path, "{schema}: {problem}");
                for w in words {
                    assert!(problem.contains(w), "{schema}: {problem:?} lacks {w:?}");
                }
            }
            Err(e) => panic!("{schema}: not a JsonSchema error: {e}"),
            Ok(g) => panic!("{schema}: accepted:\n{g}"),
        }
    }

    fn rule<'g>(g: &'g str, name: &str) -> &'g str {
        let head = format!("{name} ::= ");
        g.lines().find_map(|l| l.strip_prefix(head.as_str())).unwrap_or_else(|| panic!("no rule {name}:\n{g}"))
    }

    #[test]
    fn any_value() {
        for s in ["true", "{}", r#"{"title": "x", "description": "y", "$comment": "z"}"#] {
            let g = ok(s);
            assert_eq!(rule(&g, "root"), "value");
            assert!(g.contains("object ::= ") && g.contains("array ::= ") && g.contains("null ::= "), "{g}");
        }
    }

    #[test]
    fn primitives() {
        for (t, r) in [
            ("null", "null"),
            ("boolean", "boolean"),
            ("integer", "integer"),
            ("number", "number"),
            ("string", "string"),
            ("array", "array"),
            ("object", "object"),
        ] {
            let g = ok(&format!(r#"{{"type": "{t}"}}"#));
            assert_eq!(rule(&g, "root"), r, "{g}");
        }
        let g = ok(r#"{"type": "string"}"#);
        assert_eq!(rule(&g, "string"), r#""\"" char* "\"""#);
        let g = ok(r#"{"type": ["string", "null"]}"#);
        assert_eq!(rule(&g, "root"), "string | null");
    }

    #[test]
    fn space_is_bounded() {
        let g = ok(r#"{"type": "array", "items": {"type": "integer"}}"#);
        assert_eq!(rule(&g, "space"), r#"| " " | "\n" [ \t]{0,20}"#);
        check_gbnf(&format!("root ::= space\nspace ::= {}", rule(&g, "space"))).unwrap();
    }

    #[test]
    fn person_with_required_and_optional_fields() {
        let g = ok(r#"{
            "type": "object",
            "properties": {
                "nickname": {"type": "string"},
                "name": {"type": "string", "description": "full name"},
                "age": {"type": "integer"},
                "email": {"type": "string", "format": "email"},
                "married": {"type": "boolean"}
            },
            "required": ["name", "age"]
        }"#);
        assert_eq!(
            rule(&g, "root"),
            r#""{" space ( nickname-kv "," space )? name-kv "," space age-kv ( "," space email-kv )? ( "," space married-kv )? space "}""#
        );
        assert_eq!(rule(&g, "name-kv"), r#""\"name\"" space ":" space string"#);
        assert_eq!(rule(&g, "age-kv"), r#""\"age\"" space ":" space integer"#);
    }

    #[test]
    fn all_optional_properties() {
        let g = ok(r#"{"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"},
            "c": {"type": "null"}}}"#);
        assert_eq!(rule(&g, "root"), r#""{" space ( a-kv rest-1 | b-kv rest-2 | c-kv )? space "}""#);
        assert_eq!(rule(&g, "rest-1"), r#"( "," space b-kv )? rest-2"#);
        assert_eq!(rule(&g, "rest-2"), r#"( "," space c-kv )?"#);
        let g = ok(r#"{"type": "object", "properties": {}, "additionalProperties": false}"#);
        assert_eq!(rule(&g, "root"), r#""{" space "}""#);
    }

    #[test]
    fn nested_objects() {
        let g = ok(r#"{"type": "object", "properties": {
            "address": {"type": "object", "properties": {
                "street": {"type": "string"},
                "geo": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                        "required": ["lat", "lon"]}
            }, "required": ["street", "geo"]}
        }, "required": ["address"]}"#);
        assert!(rule(&g, "address").contains("address-street-kv \",\" space address-geo-kv"), "{g}");
        assert!(rule(&g, "address-geo").contains("address-geo-lat-kv"), "{g}");
    }

    #[test]
    fn arrays_of_objects_with_bounds() {
        let g = ok(r#"{"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}},
            "required": ["id"]}, "minItems": 1, "maxItems": 3}"#);
        assert_eq!(rule(&g, "root"), r#""[" space item ( "," space item ){0,2} space "]""#);
        let g = ok(r#"{"type": "array", "items": {"type": "string"}, "maxItems": 5}"#);
        assert_eq!(rule(&g, "root"), r#""[" space items? space "]""#);
        assert_eq!(rule(&g, "items"), r#"string ( "," space string ){0,4}"#);
        let g = ok(r#"{"type": "array", "items": {"type": "string"}, "minItems": 3}"#);
        assert_eq!(rule(&g, "root"), r#""[" space string ( "," space string ){2} ( "," space string )* space "]""#);
        let g = ok(r#"{"type": "array", "maxItems": 0}"#);
        assert_eq!(rule(&g, "root"), r#""[" space "]""#);
        ok(r#"{"type": "array", "items": {"type": "integer"}, "minItems": 1999, "maxItems": 1999}"#);
        ok(r#"{"type": "array", "items": {"type": "integer"}, "maxItems": 1999}"#);
    }

    #[test]
    fn tuples() {
        let g = ok(r#"{"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
            "minItems": 2}"#);
        assert_eq!(rule(&g, "root"), r#""[" space string "," space integer space "]""#);
        // Without minItems, a prefix of the tuple is valid too.
        let g = ok(r#"{"prefixItems": [{"type": "string"}, {"type": "integer"}]}"#);
        assert_eq!(rule(&g, "root"), r#""[" space items? space "]""#);
        assert_eq!(rule(&g, "items"), "string tuple-1-on?");
        assert_eq!(rule(&g, "tuple-1-on"), r#""," space integer"#);
        let g = ok(r#"{"prefixItems": [{"const": 1}], "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4}"#);
        assert_eq!(rule(&g, "root"), r#""[" space tuple-0 ( "," space boolean ){0,3} space "]""#);
        ok(r#"{"type": "array", "items": [{"type": "null"}, {"type": "string"}], "additionalItems": false}"#);
    }

    #[test]
    fn enums_and_consts() {
        let g = ok(r#"{"enum": ["red", "green", 3, 4.5, null, true, {"a": [1]}]}"#);
        assert_eq!(rule(&g, "root"), r#""\"red\"" | "\"green\"" | "3" | "4.5" | "null" | "true" | "{\"a\":[1]}""#);
        let g = ok(r#"{"type": "string", "enum": ["a", 1, "b"]}"#);
        assert_eq!(rule(&g, "root"), r#""\"a\"" | "\"b\"""#);
        let g = ok(r#"{"const": "say \"hi\"\\ \n\u0001 é 😀"}"#);
        assert_eq!(rule(&g, "root"), r#""\"say \\\"hi\\\"\\\\ \\n\\u0001 \u00E9 \U0001F600\"""#);
        let g = ok(r#"{"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
            "required": ["kind", "r"]}"#);
        assert_eq!(rule(&g, "kind"), r#""\"circle\"""#);
    }

    #[test]
    fn any_of_and_one_of() {
        let g = ok(r#"{"anyOf": [{"type": "string"}, {"type": "null"}], "default": null}"#);
        assert_eq!(rule(&g, "root"), "string | null");
        let g = ok(r#"{"type": "object", "properties": {"x": {"oneOf": [{"type": "integer"},
            {"type": "array", "items": {"type": "integer"}}]}}, "required": ["x"]}"#);
        assert_eq!(rule(&g, "x"), "integer | x-1");
    }

    #[test]
    fn all_of_objects_merge() {
        let g = ok(r##"{"$defs": {"Named": {"type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"]}},
            "allOf": [{"$ref": "#/$defs/Named"}, {"properties": {"age": {"type": "integer"}}}]}"##);
        assert_eq!(rule(&g, "root"), r#""{" space name-kv ( "," space age-kv )? space "}""#);
        // A single member (pydantic's way of adding a description to a reference).
        let g = ok(r##"{"$defs": {"A": {"type": "integer"}}, "type": "object", "properties": {"a":
            {"allOf": [{"$ref": "#/$defs/A"}], "description": "an A"}}, "required": ["a"]}"##);
        assert_eq!(rule(&g, "a-kv"), r#""\"a\"" space ":" space A"#);
    }

    #[test]
    fn recursive_refs() {
        let g = ok(r##"{"$ref": "#/$defs/Tree", "$defs": {"Tree": {"type": "object", "properties": {
            "value": {"type": "integer"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}
        }, "required": ["value", "children"]}}}"##);
        assert_eq!(rule(&g, "root"), "Tree");
        assert_eq!(rule(&g, "Tree-children"), r#""[" space Tree-children-items? space "]""#);
        assert_eq!(rule(&g, "Tree-children-items"), r#"Tree ( "," space Tree )*"#);
        assert_eq!(g.matches("\nTree ::= ").count(), 1, "one rule per definition:\n{g}");
        // `#` is the root itself; `definitions` works like `$defs`.
        let g = ok(r##"{"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
            "d": {"$ref": "#/definitions/D"}}, "definitions": {"D": {"type": "string", "format": "date"}}}"##);
        assert_eq!(rule(&g, "next"), "root | null");
        assert_eq!(rule(&g, "D"), r#""\"" date "\"""#);
        // Mutual recursion through objects.
        ok(r##"{"$defs": {"A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
            "B": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}]}},
            "$ref": "#/$defs/A"}"##);
    }

    #[test]
    fn additional_properties() {
        let g = ok(r#"{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
            "additionalProperties": true}"#);
        assert_eq!(rule(&g, "root"), r#""{" space a-kv ( "," space additional-kv )* space "}""#);
        assert_eq!(rule(&g, "additional-kv"), r#"string space ":" space value"#);
        let g = ok(r#"{"type": "object", "additionalProperties": {"type": "number"}}"#);
        assert_eq!(rule(&g, "root"), r#""{" space ( additional-kv ( "," space additional-kv )* )? space "}""#);
        assert_eq!(rule(&g, "root"), r#""{" space ( additional-kv ( "," space additional-kv )* )? space "}""#);
        let g = ok(r#"{"type": "object", "additionalProperties": true}"#);
        assert_eq!(rule(&g, "root"), "object");
    }

    #[test]
    fn string_lengths_and_formats() {
        let g = ok(r#"{"type": "string", "minLength": 2, "maxLength": 10}"#);
        assert_eq!(rule(&g, "root"), r#""\"" char{2,10} "\"""#);
        let g = ok(r#"{"type": "string", "maxLength": 0}"#);
        assert_eq!(rule(&g, "root"), r#""\"\"""#);
        ok(r#"{"type": "string", "minLength": 1999}"#);
        ok(r#"{"type": "string", "maxLength": 1999}"#);
        for f in ["date", "time", "date-time", "uuid"] {
            let g = ok(&format!(r#"{{"type": "string", "format": "{f}"}}"#));
            assert_eq!(rule(&g, "root"), format!(r#""\"" {f} "\"""#));
        }
        // Unknown formats are annotations.
        let g = ok(r#"{"type": "string", "format": "email"}"#);
        assert_eq!(rule(&g, "root"), "string");
    }

    #[test]
    fn integer_ranges() {
        let g = ok(r#"{"type": "integer", "minimum": 0, "maximum": 100}"#);
        assert_eq!(rule(&g, "root"), r#"[0-9] | [1-9] [0-9] | "100""#);
        let g = ok(r#"{"type": "integer", "exclusiveMinimum": 0}"#);
        assert_eq!(rule(&g, "root"), r#"[1-9] | [1-9] [0-9]{1,15}"#);
        let g = ok(r#"{"type": "integer", "minimum": -5, "maximum": 5}"#);
        assert_eq!(rule(&g, "root"), r#""-" ( [1-5] ) | [0-5]"#);
        let g = ok(r#"{"type": "integer", "minimum": 17, "maximum": 342}"#);
        assert_eq!(
            rule(&g, "root"),
            r#"( "1" [7-9] | [2-9] [0-9] ) | ( [1-2] [0-9]{2} | "3" ( [0-3] [0-9] | "4" [0-2] ) )"#
        );
        ok(r#"{"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}"#);
        ok(r#"{"type": "integer", "minimum": 1234567890123456789}"#);
        ok(r#"{"type": "integer", "maximum": -1234567890123}"#);
        ok(r#"{"type": "integer", "minimum": 2.5, "exclusiveMaximum": 7}"#);
        ok(r#"{"type": "integer", "minimum": 3, "exclusiveMinimum": true}"#);
    }

    #[test]
    fn rule_names_are_sanitized_and_unique() {
        let g = ok(r#"{"type": "object", "properties": {
            "first name": {"type": "string", "maxLength": 5},
            "first_name": {"type": "string", "maxLength": 6},
            "string": {"type": "string", "minLength": 1},
            "ünï": {"type": "array"}
        }, "required": ["first name", "first_name", "string", "ünï"]}"#);
        assert_eq!(rule(&g, "first-name"), r#""\"" char{0,5} "\"""#);
        assert_eq!(rule(&g, "first-name-2"), r#""\"" char{0,6} "\"""#);
        assert_eq!(rule(&g, "string-2"), r#""\"" char+ "\"""#);
        assert!(g.contains(r#""\"\u00FCn\u00EF\"" space ":" space array"#), "{g}");
        for line in g.lines() {
            let (name, _) = line.split_once(" ::= ").unwrap();
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{name}");
        }
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| {
            let mut s = String::from(r#"{"type": "string"}"#);
            for _ in 0..n {
                s = format!(r#"{{"type": "array", "items": {s}}}"#);
            }
            s
        };
        ok(&nested(MAX_SCHEMA_DEPTH));
        let path = "/items".repeat(MAX_SCHEMA_DEPTH + 1);
        bad(&nested(MAX_SCHEMA_DEPTH + 1), &path, &["deeper than 64"]);
        // A long chain of definitions counts as depth too.
        let mut defs = Vec::new();
        for i in 0..100 {
            defs.push(format!(r##""D{i}": {{"type": "array", "items": {{"$ref": "#/$defs/D{}"}}}}"##, i + 1));
        }
        defs.push(r#""D100": {"type": "null"}"#.to_string());
        let s = format!(r##"{{"$ref": "#/$defs/D0", "$defs": {{{}}}}}"##, defs.join(","));
        let e = json_schema_to_gbnf(&s).unwrap_err().to_string();
        assert!(e.contains("deeper than 64"), "{e}");
    }

    #[test]
    fn refuses_malformed_schemas() {
        bad("{\"type\": ", "", &["not valid JSON", "line 1 column 9"]);
        bad("[1, 2]", "", &["object or a boolean", "array"]);
        bad("false", "", &["`false`"]);
        bad(r#"{"type": "strin"}"#, "/type", &["strin"]);
        bad(r#"{"type": ["string", "nul"]}"#, "/type/1", &["nul"]);
        bad(r#"{"type": 3}"#, "/type", &["`type`"]);
        bad(
            r#"{"type": "object", "properties": {"a": {"type": "string"}}, "required": 3}"#,
            "/required",
            &["`required`"],
        );
        bad(r#"{"type": "object", "properties": {"a": {}}, "required": ["b"]}"#, "/required/0", &["\"b\""]);
        bad(r#"{"type": "object", "properties": []}"#, "/properties", &["`properties`"]);
        bad(r#"{"type": "object", "properties": {"a": 5}}"#, "/properties/a", &["object or a boolean"]);
        bad(r#"{"type": "string", "minLength": -1}"#, "/minLength", &["`minLength`", "non-negative"]);
        bad(r#"{"type": "string", "maxLength": "3"}"#, "/maxLength", &["`maxLength`"]);
        bad(r#"{"enum": {}}"#, "/enum", &["`enum`"]);
        bad(r#"{"enum": []}"#, "/enum", &["`enum`", "empty"]);
        bad(r#"{"type": "integer", "enum": ["a"]}"#, "/type", &["`enum`"]);
        bad(r#"{"const": 1, "enum": [2]}"#, "/const", &["`const`", "`enum`"]);
        bad(r#"{"anyOf": []}"#, "/anyOf", &["`anyOf`", "empty"]);
        bad(r#"{"oneOf": {"type": "null"}}"#, "/oneOf", &["`oneOf`"]);
        bad(r#"{"type": "object", "additionalProperties": 1}"#, "/additionalProperties", &["additionalProperties"]);
        bad(r#"{"type": "array", "prefixItems": {}}"#, "/prefixItems", &["`prefixItems`"]);
    }

    #[test]
    fn refuses_impossible_or_oversized_bounds() {
        bad(r#"{"type": "string", "minLength": 5, "maxLength": 2}"#, "/minLength", &["`minLength` 5", "`maxLength` 2"]);
        bad(r#"{"type": "array", "minItems": 4, "maxItems": 1}"#, "/minItems", &["`minItems` 4", "`maxItems` 1"]);
        bad(r#"{"type": "string", "maxLength": 5000}"#, "/maxLength", &["5000", "1999", "2000"]);
        bad(r#"{"type": "array", "minItems": 2000}"#, "/minItems", &["2000", "1999"]);
        bad(r#"{"prefixItems": [{}, {}], "minItems": 3}"#, "/minItems", &["`minItems` 3", "2 items"]);
        bad(r#"{"type": "integer", "minimum": 5, "maximum": 4}"#, "/minimum", &["empty"]);
        bad(r#"{"type": "integer", "minimum": 1e30}"#, "/minimum", &["`minimum`", "64-bit"]);
        bad(r#"{"type": "integer", "maximum": "3"}"#, "/maximum", &["`maximum`", "number"]);
        bad(r#"{"type": "object", "properties": {"a": false}, "required": ["a"]}"#, "/required/0", &["`false`"]);
    }

    #[test]
    fn refuses_bad_refs() {
        bad(r#"{"$ref": "https://example.com/schema.json"}"#, "/$ref", &["not a local reference"]);
        bad(r##"{"$ref": "#/$defs/Missing"}"##, "/$ref", &["#/$defs/Missing", "points nowhere"]);
        bad(r##"{"$ref": "#anchor"}"##, "/$ref", &["anchor"]);
        bad(r#"{"$ref": 5}"#, "/$ref", &["`$ref` must be a string"]);
        bad(r##"{"$ref": "#/$defs/A", "type": "object"}"##, "/type", &["`$ref`", "`type`"]);
        // Left recursion: a definition reaching itself before matching anything.
        bad(r##"{"$ref": "#"}"##, "/$ref", &["left recursion"]);
        // Valid JSON nested past serde_json's limit: said as such, not "not valid JSON".
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        bad(&deep, "", &["deeper than serde_json reads"]);
        bad(r##"{"anyOf": [{"type": "null"}, {"$ref": "#"}]}"##, "/anyOf/1/$ref", &["left recursion"]);
        bad(
            r##"{"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/B"}, {"type": "null"}]}, "B": {"$ref": "#/$defs/A"}},
            "type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}"##,
            "/$defs/A/anyOf/0/$ref",
            &["left recursion", "#/$defs/B"],
        );
        // A cycle through a rule converted earlier (from inside an object).
        let e = json_schema_to_gbnf(
            r##"{"$defs": {"B": {"anyOf": [{"type": "object", "properties": {"x": {"$ref": "#/$defs/A"}}},
            {"$ref": "#/$defs/C"}]}, "A": {"$ref": "#/$defs/C"}, "C": {"$ref": "#/$defs/B"}}, "$ref": "#/$defs/B"}"##,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("left recursion"), "{e}");
    }

    #[test]
    fn refuses_unsupported_keywords() {
        for (schema, path, kw) in [
            (r#"{"type": "string", "pattern": "^a+$"}"#, "/pattern", "pattern"),
            (r#"{"type": "number", "minimum": 0}"#, "/minimum", "minimum"),
            (r#"{"type": "number", "exclusiveMaximum": 1.5}"#, "/exclusiveMaximum", "exclusiveMaximum"),
            (r#"{"type": "integer", "multipleOf": 3}"#, "/multipleOf", "multipleOf"),
            (r#"{"not": {"type": "null"}}"#, "/not", "not"),
            (r#"{"if": {}, "then": {}, "else": {}}"#, "/if", "if"),
            (r#"{"type": "object", "dependentRequired": {"a": ["b"]}}"#, "/dependentRequired", "dependentRequired"),
            (r#"{"type": "object", "patternProperties": {"^x": {}}}"#, "/patternProperties", "patternProperties"),
            (r#"{"type": "array", "uniqueItems": true}"#, "/uniqueItems", "uniqueItems"),
            (r#"{"type": "array", "contains": {"type": "null"}}"#, "/contains", "contains"),
            (
                r#"{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string",
                "pattern": "x"}}}}"#,
                "/properties/tags/items/pattern",
                "pattern",
            ),
            (r#"{"allOf": [{"type": "string"}, {"maxLength": 3}]}"#, "/allOf/0/type", "allOf"),
            (r#"{"anyOf": [{"type": "null"}], "type": "object"}"#, "/type", "anyOf"),
            (r#"{"type": "string", "format": "date", "maxLength": 3}"#, "/maxLength", "maxLength"),
        ] {
            bad(schema, path, &[&format!("`{kw}`")]);
        }
    }

    #[test]
    fn every_output_passes_check_gbnf() {
        // A larger, realistic schema mixing everything.
        ok(r##"{
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Order",
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "created": {"type": "string", "format": "date-time"},
                "status": {"enum": ["new", "paid", "shipped"]},
                "customer": {"$ref": "#/$defs/Customer"},
                "lines": {"type": "array", "minItems": 1, "maxItems": 50, "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string", "minLength": 3, "maxLength": 12},
                                   "qty": {"type": "integer", "minimum": 1, "maximum": 999},
                                   "price": {"type": "number"}},
                    "required": ["sku", "qty"]}},
                "notes": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "meta": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
                "point": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}],
                          "minItems": 2}
            },
            "required": ["id", "status", "customer", "lines"],
            "$defs": {
                "Customer": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "referrer": {"anyOf": [{"$ref": "#/$defs/Customer"}, {"type": "null"}]}
                }, "required": ["name"]}
            }
        }"##);
    }
}

#[cfg(all(test, feature = "json-schema"))]
mod range_tests {
    //! The integer-range expressions checked number by number with a tiny matcher for the
    //! subset they use (literals, `[a-b]`, `[0-9]{n}` / `{n,m}`, groups, alternation).

    use super::json_schema_to_gbnf;

    enum Node {
        Lit(Vec<u8>),
        Class(u8, u8),
        Group(Vec<Vec<(Node, usize, usize)>>),
    }

    fn parse_alts(p: &[u8], i: &mut usize) -> Vec<Vec<(Node, usize, usize)>> {
        let mut out = vec![parse_seq(p, i)];
        while p.get(*i) == Some(&b'|') {
            *i += 1;
            out.push(parse_seq(p, i));
        }
        out
    }

    fn parse_seq(p: &[u8], i: &mut usize) -> Vec<(Node, usize, usize)> {
        let mut seq = Vec::new();
        loop {
            while p.get(*i) == Some(&b' ') {
                *i += 1;
            }
            let node = match p.get(*i) {
                Some(b'"') => {
                    let end = *i + 1 + p[*i + 1..].iter().position(|&c| c == b'"').unwrap();
                    let lit = p[*i + 1..end].to_vec();
                    *i = end + 1;
                    Node::Lit(lit)
                }
                Some(b'[') => {
                    let range = p[*i + 2] == b'-';
                    let node = Node::Class(p[*i + 1], if range { p[*i + 3] } else { p[*i + 1] });
                    *i += if range { 5 } else { 3 };
                    node
                }
                Some(b'(') => {
                    *i += 1;
                    let g = parse_alts(p, i);
                    while p.get(*i) == Some(&b' ') {
                        *i += 1;
                    }
                    assert_eq!(p[*i], b')');
                    *i += 1;
                    Node::Group(g)
                }
                _ => return seq,
            };
            let (min, max) = if p.get(*i) == Some(&b'{') {
                let end = *i + p[*i..].iter().position(|&c| c == b'}').unwrap();
                let inner = std::str::from_utf8(&p[*i + 1..end]).unwrap();
                *i = end + 1;
                match inner.split_once(',') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (inner.parse().unwrap(), inner.parse().unwrap()),
                }
            } else {
                (1, 1)
            };
            seq.push((node, min, max));
        }
    }

    /// The end positions after matching `alts` from any of `at`.
    fn run(alts: &[Vec<(Node, usize, usize)>], s: &[u8], at: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        for seq in alts {
            let mut cur = at.to_vec();
            for (node, min, max) in seq {
                let mut result = Vec::new();
                let mut reps = cur.clone();
                for n in 0..=*max {
                    if n >= *min {
                        result.extend(reps.iter().copied());
                    }
                    reps = match node {
                        Node::Lit(l) => reps.iter().filter(|&&k| s[k..].starts_with(l)).map(|k| k + l.len()).collect(),
                        Node::Class(a, b) => reps
                            .iter()
                            .filter(|&&k| s.get(k).is_some_and(|c| (a..=b).contains(&c)))
                            .map(|k| k + 1)
                            .collect(),
                        Node::Group(g) => run(g, s, &reps),
                    };
                }
                result.sort_unstable();
                result.dedup();
                cur = result;
            }
            out.extend(cur);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn matcher(expr: &str) -> impl Fn(&str) -> bool + use<> {
        let mut i = 0;
        let ast = parse_alts(expr.as_bytes(), &mut i);
        assert_eq!(i, expr.len(), "{expr}");
        move |text: &str| run(&ast, text.as_bytes(), &[0]).contains(&text.len())
    }

    fn root(schema: &str) -> String {
        let g = json_schema_to_gbnf(schema).unwrap();
        g.lines().next().unwrap().strip_prefix("root ::= ").unwrap().to_string()
    }

    #[test]
    fn bounded_ranges_match_exactly_their_integers() {
        for (lo, hi) in [(0, 100), (17, 342), (-5, 5), (-342, -17), (-1000, 999), (5, 5), (0, 0), (-7, 0), (99, 1001)] {
            let expr = root(&format!(r#"{{"type": "integer", "minimum": {lo}, "maximum": {hi}}}"#));
            let m = matcher(&expr);
            for v in -1200i64..=1200 {
                assert_eq!(m(&v.to_string()), (lo..=hi).contains(&v), "{v} in [{lo}, {hi}]: {expr}");
            }
            for text in ["-0", "007", "01", "", "-"] {
                assert!(!m(text), "{text:?}: {expr}");
            }
        }
    }

    #[test]
    fn half_bounded_ranges() {
        let expr = root(r#"{"type": "integer", "minimum": 42}"#);
        let m = matcher(&expr);
        for v in -100i64..=1200 {
            assert_eq!(m(&v.to_string()), v >= 42, "{v}: {expr}");
        }
        assert!(m("1234567890123456") && !m("12345678901234567"), "{expr}");
        let expr = root(r#"{"type": "integer", "exclusiveMaximum": -3}"#);
        let m = matcher(&expr);
        for v in -1200i64..=100 {
            assert_eq!(m(&v.to_string()), v < -3, "{v}: {expr}");
        }
        let m =
            matcher(&root(r#"{"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}"#));
        for v in [i64::MIN, i64::MAX, 0, -1, 1, 1 << 40, -(1 << 50) - 7] {
            assert!(m(&v.to_string()), "{v}");
        }
        assert!(!m("9223372036854775808") && !m("-9223372036854775809") && !m("-0"));
    }
}
