//! An answer constrained to JSON that follows a JSON Schema (llama.cpp's grammar sampler with
//! the schema turned into GBNF), parsed back.
//!
//! `cargo run -p llama-runner --features json-schema --example json_schema -- MODEL.gguf`

use llama_runner::{
    Backend, Context, ContextOptions, Event, Model, ModelOptions, Sampler, SamplingOptions, StopConditions,
};

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "name": { "type": "string", "maxLength": 12 },
    "age": { "type": "integer", "minimum": 0, "maximum": 120 },
    "colours": { "type": "array", "items": { "enum": ["red", "green", "blue"] }, "maxItems": 3 }
  },
  "required": ["name", "age", "colours"],
  "additionalProperties": false
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: json_schema MODEL.gguf")?;
    let model = Model::load(Backend::get()?, &path, &ModelOptions::default())?;
    let mut ctx = Context::new(&model, &ContextOptions { n_ctx: 2048, ..Default::default() })?;
    let options = SamplingOptions::builder().json_schema(SCHEMA).seed(7).build()?;
    let mut sampler = Sampler::new(&model, &options)?;
    let prompt = model.tokenize("A person, as JSON: ", true)?;
    let mut text = String::new();
    // The grammar ends the object; the budget only bounds a model that rambles in strings.
    for event in ctx.stream(&mut sampler, &prompt, StopConditions::max_tokens(400))? {
        match event? {
            Event::Done { reason, .. } => println!("[{reason:?}]"),
            event => text.push_str(event.text()),
        }
    }
    println!("{text}");
    // The grammar admits only JSON of the schema's shape.
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let age = value["age"].as_i64().ok_or("no integer age")?;
    assert!((0..=120).contains(&age), "age {age} outside the schema's range");
    assert!(value["colours"].as_array().is_some_and(|c| c.len() <= 3));
    println!("parsed: name {}, age {age}, colours {}", value["name"], value["colours"]);
    Ok(())
}
