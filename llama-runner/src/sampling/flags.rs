//! llama.cpp's sampling flags (`common/arg.cpp`) read into [`SamplingOptions`] and written back.
//!
//! Values are read as llama.cpp reads them: numbers with `std::stof` / `std::stoi` /
//! `std::stoul` semantics (leading spaces skipped, the longest numeric prefix taken, the rest
//! ignored; out-of-range values refused), `--temp` clamped to 0, `--dry-base` below 1 ignored,
//! the first `--dry-sequence-breaker` replacing the defaults (`none` clears them), `--logit-bias`
//! and breakers accumulating, the last value winning otherwise, `_` in `--` flags read as `-`.
//! Stricter than llama.cpp where it would silently do something else or abort: an unknown
//! sampler name or letter is an error (llama.cpp warns and drops it), a `--mirostat` other than
//! 0, 1 or 2 is an error (llama.cpp aborts when building the chain), and the result is
//! [validated](SamplingOptions::validate).

use super::{Grammar, LogitBias, Mirostat, SamplerType, SamplingOptions};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Samplers,
    Seed,
    SamplingSeq,
    IgnoreEos,
    Temp,
    TopK,
    TopP,
    MinP,
    TopNSigma,
    XtcProbability,
    XtcThreshold,
    Typical,
    RepeatLastN,
    RepeatPenalty,
    PresencePenalty,
    FrequencyPenalty,
    DryMultiplier,
    DryBase,
    DryAllowedLength,
    DryPenaltyLastN,
    DrySequenceBreaker,
    AdaptiveTarget,
    AdaptiveDecay,
    DynatempRange,
    DynatempExp,
    Mirostat,
    MirostatLr,
    MirostatEnt,
    LogitBias,
    Grammar,
    GrammarFile,
    JsonSchema,
    JsonSchemaFile,
}

/// Every spelling, as in `common/arg.cpp`.
const TABLE: &[(&[&str], Flag)] = &[
    (&["--samplers"], Flag::Samplers),
    (&["-s", "--seed"], Flag::Seed),
    (&["--sampler-seq", "--sampling-seq"], Flag::SamplingSeq),
    (&["--ignore-eos"], Flag::IgnoreEos),
    (&["--temp", "--temperature"], Flag::Temp),
    (&["--top-k"], Flag::TopK),
    (&["--top-p"], Flag::TopP),
    (&["--min-p"], Flag::MinP),
    (&["--top-nsigma", "--top-n-sigma"], Flag::TopNSigma),
    (&["--xtc-probability"], Flag::XtcProbability),
    (&["--xtc-threshold"], Flag::XtcThreshold),
    (&["--typical", "--typical-p"], Flag::Typical),
    (&["--repeat-last-n"], Flag::RepeatLastN),
    (&["--repeat-penalty"], Flag::RepeatPenalty),
    (&["--presence-penalty"], Flag::PresencePenalty),
    (&["--frequency-penalty"], Flag::FrequencyPenalty),
    (&["--dry-multiplier"], Flag::DryMultiplier),
    (&["--dry-base"], Flag::DryBase),
    (&["--dry-allowed-length"], Flag::DryAllowedLength),
    (&["--dry-penalty-last-n"], Flag::DryPenaltyLastN),
    (&["--dry-sequence-breaker"], Flag::DrySequenceBreaker),
    (&["--adaptive-target"], Flag::AdaptiveTarget),
    (&["--adaptive-decay"], Flag::AdaptiveDecay),
    (&["--dynatemp-range"], Flag::DynatempRange),
    (&["--dynatemp-exp"], Flag::DynatempExp),
    (&["--mirostat"], Flag::Mirostat),
    (&["--mirostat-lr"], Flag::MirostatLr),
    (&["--mirostat-ent"], Flag::MirostatEnt),
    (&["-l", "--logit-bias"], Flag::LogitBias),
    (&["--grammar"], Flag::Grammar),
    (&["--grammar-file"], Flag::GrammarFile),
    (&["-j", "--json-schema"], Flag::JsonSchema),
    (&["-jf", "--json-schema-file"], Flag::JsonSchemaFile),
];

/// llama.cpp's sampling flags that this crate does not implement yet.
const UNSUPPORTED: &[&str] = &["-bs", "--backend-sampling"];

/// Every spelling of the sampling flags [`parse_flags`] reads.
pub const SAMPLING_FLAGS: &[&str] = &[
    "--samplers",
    "-s",
    "--seed",
    "--sampler-seq",
    "--sampling-seq",
    "--ignore-eos",
    "--temp",
    "--temperature",
    "--top-k",
    "--top-p",
    "--min-p",
    "--top-nsigma",
    "--top-n-sigma",
    "--xtc-probability",
    "--xtc-threshold",
    "--typical",
    "--typical-p",
    "--repeat-last-n",
    "--repeat-penalty",
    "--presence-penalty",
    "--frequency-penalty",
    "--dry-multiplier",
    "--dry-base",
    "--dry-allowed-length",
    "--dry-penalty-last-n",
    "--dry-sequence-breaker",
    "--adaptive-target",
    "--adaptive-decay",
    "--dynatemp-range",
    "--dynatemp-exp",
    "--mirostat",
    "--mirostat-lr",
    "--mirostat-ent",
    "-l",
    "--logit-bias",
    "--grammar",
    "--grammar-file",
    "-j",
    "--json-schema",
    "-jf",
    "--json-schema-file",
];

/// The flag as llama.cpp looks it up: `_` read as `-` in `--` flags.
fn normalize(word: &str) -> std::borrow::Cow<'_, str> {
    if word.starts_with("--") && word.contains('_') { word.replace('_', "-").into() } else { word.into() }
}

fn lookup(word: &str) -> Option<Flag> {
    let word = normalize(word);
    TABLE.iter().find(|(names, _)| names.contains(&word.as_ref())).map(|(_, f)| *f)
}

/// Whether `word` is one of the sampling flags [`parse_flags`] reads (so a general flag parser
/// can hand it over, with its value).
pub fn is_sampling_flag(word: &str) -> bool {
    lookup(word).is_some()
}

fn flag_error(flag: &str, value: Option<&str>, reason: impl Into<String>) -> Error {
    Error::Flag {
        flag: flag.to_string(),
        value: value.map(str::to_string),
        reason: crate::flags::FlagReason::Other(reason.into()),
    }
}

/// Reads llama.cpp sampling flags, one word each (`["--temp", "0.7", "--top-k", "20"]`), onto
/// llama.cpp's defaults, and validates the result.
///
/// ```
/// let o = llama_runner::sampling::parse_flags(&["--temp", "0.7", "--top-k", "20", "-s", "42"]).unwrap();
/// assert_eq!((o.temp, o.top_k, o.seed), (0.7, 20, 42));
/// ```
pub fn parse_flags<S: AsRef<str>>(args: &[S]) -> Result<SamplingOptions> {
    let mut options = SamplingOptions::default();
    parse_flags_onto(&mut options, args)?;
    Ok(options)
}

/// Reads llama.cpp sampling flags onto `options` (see [`parse_flags`]) and validates the
/// result. An unknown flag, a missing or unreadable value, and the flags of features not
/// implemented here (backend sampling) are errors naming the flag; on error
/// `options` is left as it was.
pub fn parse_flags_onto<S: AsRef<str>>(options: &mut SamplingOptions, args: &[S]) -> Result<()> {
    let mut o = options.clone();
    let mut breakers_cleared = false;
    let mut i = 0;
    while i < args.len() {
        let word = args[i].as_ref();
        i += 1;
        let Some(flag) = lookup(word) else {
            let reason = if UNSUPPORTED.contains(&normalize(word).as_ref()) {
                "not supported by llama_runner's sampler yet"
            } else if word.starts_with('-') {
                "not a llama.cpp sampling flag"
            } else {
                "not a flag (sampling flags take at most one value)"
            };
            return Err(flag_error(word, None, reason));
        };
        if flag == Flag::IgnoreEos {
            o.ignore_eos = true;
            continue;
        }
        let Some(value) = args.get(i).map(AsRef::as_ref) else {
            return Err(flag_error(word, None, "expects a value"));
        };
        i += 1;
        let float = || stof(word, value);
        let int = || stoi(word, value);
        match flag {
            Flag::IgnoreEos => unreachable!("handled above"),
            Flag::Samplers => {
                o.samplers = value
                    .split(';')
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        SamplerType::from_name(n).ok_or_else(|| {
                            flag_error(word, Some(value), format!("unknown sampler `{n}`; known: {}", known_names()))
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            Flag::SamplingSeq => {
                o.samplers = value
                    .chars()
                    .map(|c| {
                        SamplerType::from_letter(c).ok_or_else(|| {
                            flag_error(
                                word,
                                Some(value),
                                format!("unknown sampler letter `{c}`; known: {}", known_letters()),
                            )
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            // std::stoul into a uint32_t: a leading `-` negates modulo 2^64, then the value is
            // truncated to 32 bits.
            Flag::Seed => o.seed = stoul(word, value)? as u32,
            Flag::Temp => o.temp = float()?.max(0.0),
            Flag::TopK => o.top_k = int()?,
            Flag::TopP => o.top_p = float()?,
            Flag::MinP => o.min_p = float()?,
            Flag::TopNSigma => o.top_n_sigma = float()?,
            Flag::XtcProbability => o.xtc_probability = float()?,
            Flag::XtcThreshold => o.xtc_threshold = float()?,
            Flag::Typical => o.typ_p = float()?,
            Flag::RepeatLastN | Flag::DryPenaltyLastN => {
                let n = int()?;
                if n < -1 {
                    return Err(flag_error(word, Some(value), "must be -1 (context size), 0 (off) or a count"));
                }
                if flag == Flag::RepeatLastN {
                    o.penalty_last_n = n;
                } else {
                    o.dry_penalty_last_n = n;
                }
            }
            Flag::RepeatPenalty => o.penalty_repeat = float()?,
            Flag::PresencePenalty => o.penalty_present = float()?,
            Flag::FrequencyPenalty => o.penalty_freq = float()?,
            Flag::DryMultiplier => o.dry_multiplier = float()?,
            Flag::DryBase => {
                // llama.cpp keeps the previous base when the value is below 1.
                let base = float()?;
                if base >= 1.0 {
                    o.dry_base = base;
                }
            }
            Flag::DryAllowedLength => o.dry_allowed_length = int()?,
            Flag::DrySequenceBreaker => {
                if !breakers_cleared {
                    o.dry_sequence_breakers.clear();
                    breakers_cleared = true;
                }
                if value == "none" {
                    o.dry_sequence_breakers.clear();
                } else {
                    o.dry_sequence_breakers.push(value.to_string());
                }
            }
            Flag::AdaptiveTarget => o.adaptive_target = float()?,
            Flag::AdaptiveDecay => o.adaptive_decay = float()?,
            Flag::DynatempRange => o.dynatemp_range = float()?,
            Flag::DynatempExp => o.dynatemp_exponent = float()?,
            Flag::Mirostat => {
                let n = int()?;
                o.mirostat = u8::try_from(n).ok().and_then(|n| Mirostat::try_from(n).ok()).ok_or_else(|| {
                    flag_error(word, Some(value), "must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)")
                })?;
            }
            Flag::MirostatLr => o.mirostat_eta = float()?,
            Flag::MirostatEnt => o.mirostat_tau = float()?,
            Flag::LogitBias => o.logit_bias.push(logit_bias(word, value)?),
            // llama.cpp reads the files and converts schemas while parsing; the text is kept
            // here, checked now (naming the flag) and converted again when a sampler is built.
            Flag::Grammar => o.grammar = Some(checked_grammar(word, Grammar::Gbnf(value.to_string()))?),
            Flag::JsonSchema => o.grammar = Some(checked_grammar(word, Grammar::JsonSchema(value.to_string()))?),
            Flag::GrammarFile | Flag::JsonSchemaFile => {
                let text = std::fs::read_to_string(value).map_err(|source| Error::GrammarFile {
                    flag: word.to_string(),
                    path: value.into(),
                    source,
                })?;
                let g = if flag == Flag::GrammarFile { Grammar::Gbnf(text) } else { Grammar::JsonSchema(text) };
                o.grammar = Some(checked_grammar(word, g)?);
            }
        }
    }
    o.validate()?;
    *options = o;
    Ok(())
}

/// The grammar, refused with the flag named when it does not parse (or the schema does not
/// convert). An empty text is no grammar, as in llama.cpp.
fn checked_grammar(flag: &str, g: Grammar) -> Result<Grammar> {
    let gbnf = g.to_gbnf()?;
    if !gbnf.is_empty() {
        super::check_gbnf(&gbnf).map_err(|e| flag_error(flag, None, e.to_string()))?;
    }
    Ok(g)
}

fn known_names() -> String {
    SamplerType::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

fn known_letters() -> String {
    SamplerType::ALL.iter().map(|t| t.letter()).collect()
}

/// `TOKEN(+|-)BIAS` as llama.cpp reads it: `ss >> key >> sign`, the rest through `std::stof`.
fn logit_bias(flag: &str, value: &str) -> Result<LogitBias> {
    let bad = || flag_error(flag, Some(value), "expected TOKEN_ID(+/-)BIAS, such as 15043+1 or 15043-inf");
    let (neg, mag, rest) = c_integer_prefix(value).ok_or_else(bad)?;
    let token = i128::try_from(mag).ok().map(|m| if neg { -m } else { m }).and_then(|t| i32::try_from(t).ok());
    let token = token.ok_or_else(bad)?;
    let rest = skip_c_space(rest);
    let mut chars = rest.chars();
    let sign = chars.next().ok_or_else(bad)?;
    if sign != '+' && sign != '-' {
        return Err(bad());
    }
    // std::getline: the rest up to a newline.
    let tail = chars.as_str().split('\n').next().unwrap_or_default();
    let magnitude = stof(flag, tail).map_err(|_| bad())?;
    Ok(LogitBias { token, bias: if sign == '-' { -magnitude } else { magnitude } })
}

// ---------------------------------------------------------------------------------------------
// C number parsing, as std::stoi / std::stoul / std::stof do it.

use crate::flags::cnum::{c_integer_prefix, skip_c_space};

/// `std::stoi`.
fn stoi(flag: &str, v: &str) -> Result<i32> {
    let (neg, mag, _) =
        c_integer_prefix(v).ok_or_else(|| flag_error(flag, Some(v), "not a number (llama.cpp's std::stoi fails)"))?;
    let m = i128::try_from(mag).unwrap_or(i128::MAX);
    i32::try_from(if neg { -m } else { m })
        .map_err(|_| flag_error(flag, Some(v), "out of range for a C int (llama.cpp's std::stoi fails)"))
}

/// `std::stoul` (64-bit `unsigned long`): a leading `-` negates modulo 2^64.
fn stoul(flag: &str, v: &str) -> Result<u64> {
    let (neg, mag, _) =
        c_integer_prefix(v).ok_or_else(|| flag_error(flag, Some(v), "not a number (llama.cpp's std::stoul fails)"))?;
    let mag =
        u64::try_from(mag).map_err(|_| flag_error(flag, Some(v), "out of range (llama.cpp's std::stoul fails)"))?;
    Ok(if neg { mag.wrapping_neg() } else { mag })
}

/// `std::stof` for decimal numbers, `inf`/`infinity` and `nan`; hexadecimal floats are refused.
fn stof(flag: &str, v: &str) -> Result<f32> {
    let not_a_number = || flag_error(flag, Some(v), "not a number (llama.cpp's std::stof fails)");
    let s = skip_c_space(v);
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0f32, &s[1..]),
        Some(b'+') => (1.0f32, &s[1..]),
        _ => (1.0f32, s),
    };
    let lower = body.to_ascii_lowercase();
    if lower.starts_with("inf") {
        return Ok(sign * f32::INFINITY);
    }
    if lower.starts_with("nan") {
        return Ok(f32::NAN);
    }
    if lower.starts_with("0x") {
        return Err(flag_error(flag, Some(v), "hexadecimal floating-point numbers are not supported here"));
    }
    let bytes = body.as_bytes();
    let int_digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = int_digits;
    let mut digits = int_digits;
    if bytes.get(end) == Some(&b'.') {
        let frac = bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        digits += frac;
        end += 1 + frac;
    }
    if digits == 0 {
        return Err(not_a_number());
    }
    let mantissa_end = end;
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(bytes.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let n = bytes.get(e..).map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count());
        if n > 0 {
            end = e + n;
        }
    }
    // Rust's parser wants a digit on each side of the point.
    let mut text = String::with_capacity(end + 2);
    if int_digits == 0 {
        text.push('0');
    }
    text.push_str(&body[..mantissa_end]);
    if text.ends_with('.') {
        text.push('0');
    }
    text.push_str(&body[mantissa_end..end]);
    let magnitude: f32 = text.parse().map_err(|_| not_a_number())?;
    let nonzero = body[..mantissa_end].bytes().any(|b| matches!(b, b'1'..=b'9'));
    // strtof reports ERANGE (std::stof throws) on overflow and on underflow.
    if magnitude.is_infinite() || (nonzero && (magnitude == 0.0 || magnitude.is_subnormal())) {
        return Err(flag_error(flag, Some(v), "out of range for a float (llama.cpp's std::stof fails)"));
    }
    Ok(sign * magnitude)
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Writes `options` as llama.cpp sampling flags, one word each: only what differs from
/// llama.cpp's defaults, in a fixed order. For validated options,
/// `parse_flags(&render_flags(&o)) == o` except where flags cannot say it: a negative `temp`
/// (written as 0, which samples the same), a `dry_base` below 1 (which disables DRY; the flag
/// ignores it), `min_keep`, `no_perf` and lazy grammars (no sampling flags), and a breaker
/// spelled `none`. A grammar read from a file is written inline (`--grammar TEXT`).
pub fn render_flags(options: &SamplingOptions) -> Vec<String> {
    let d = SamplingOptions::default();
    let o = options;
    let mut out = Vec::new();
    let mut push = |flag: &str, value: String| {
        out.push(flag.to_string());
        out.push(value);
    };
    if o.seed != d.seed {
        push("--seed", o.seed.to_string());
    }
    if o.samplers != d.samplers {
        push("--samplers", o.samplers.iter().map(|t| t.name()).collect::<Vec<_>>().join(";"));
    }
    if o.temp.max(0.0) != d.temp {
        push("--temp", o.temp.max(0.0).to_string());
    }
    if o.top_k != d.top_k {
        push("--top-k", o.top_k.to_string());
    }
    for (flag, value, default) in [
        ("--top-p", o.top_p, d.top_p),
        ("--min-p", o.min_p, d.min_p),
        ("--typical", o.typ_p, d.typ_p),
        ("--top-n-sigma", o.top_n_sigma, d.top_n_sigma),
        ("--xtc-probability", o.xtc_probability, d.xtc_probability),
        ("--xtc-threshold", o.xtc_threshold, d.xtc_threshold),
        ("--dynatemp-range", o.dynatemp_range, d.dynatemp_range),
        ("--dynatemp-exp", o.dynatemp_exponent, d.dynatemp_exponent),
        ("--repeat-penalty", o.penalty_repeat, d.penalty_repeat),
        ("--presence-penalty", o.penalty_present, d.penalty_present),
        ("--frequency-penalty", o.penalty_freq, d.penalty_freq),
        ("--dry-multiplier", o.dry_multiplier, d.dry_multiplier),
        ("--dry-base", o.dry_base, d.dry_base),
        ("--adaptive-target", o.adaptive_target, d.adaptive_target),
        ("--adaptive-decay", o.adaptive_decay, d.adaptive_decay),
        ("--mirostat-lr", o.mirostat_eta, d.mirostat_eta),
        ("--mirostat-ent", o.mirostat_tau, d.mirostat_tau),
    ] {
        if value != default {
            push(flag, value.to_string());
        }
    }
    for (flag, value, default) in [
        ("--repeat-last-n", o.penalty_last_n, d.penalty_last_n),
        ("--dry-allowed-length", o.dry_allowed_length, d.dry_allowed_length),
        ("--dry-penalty-last-n", o.dry_penalty_last_n, d.dry_penalty_last_n),
    ] {
        if value != default {
            push(flag, value.to_string());
        }
    }
    if o.dry_sequence_breakers != d.dry_sequence_breakers {
        if o.dry_sequence_breakers.is_empty() {
            push("--dry-sequence-breaker", "none".to_string());
        }
        for b in &o.dry_sequence_breakers {
            push("--dry-sequence-breaker", b.clone());
        }
    }
    if o.mirostat != d.mirostat {
        push("--mirostat", o.mirostat.number().to_string());
    }
    for b in &o.logit_bias {
        let sign = if b.bias.is_sign_negative() { '-' } else { '+' };
        push("--logit-bias", format!("{}{sign}{}", b.token, b.bias.abs()));
    }
    match &o.grammar {
        Some(Grammar::Gbnf(text)) => push("--grammar", text.clone()),
        Some(Grammar::JsonSchema(text)) => push("--json-schema", text.clone()),
        None => {}
    }
    if o.ignore_eos {
        out.push("--ignore-eos".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_numbers() {
        assert_eq!(stof("f", " 0.7xyz").unwrap(), 0.7);
        assert_eq!(stof("f", ".5").unwrap(), 0.5);
        assert_eq!(stof("f", "1.").unwrap(), 1.0);
        assert_eq!(stof("f", "1e-1").unwrap(), 0.1);
        assert_eq!(stof("f", "2e").unwrap(), 2.0);
        assert_eq!(stof("f", "-inf").unwrap(), f32::NEG_INFINITY);
        assert!(stof("f", "nanx").unwrap().is_nan());
        assert!(stof("f", "1e40").is_err());
        assert!(stof("f", "1e-50").is_err());
        assert!(stof("f", "abc").is_err());
        assert!(stof("f", ".").is_err());
        assert_eq!(stoi("i", "12abc").unwrap(), 12);
        assert_eq!(stoi("i", " -3").unwrap(), -3);
        assert!(stoi("i", "99999999999").is_err());
        assert_eq!(stoul("s", "-1").unwrap() as u32, u32::MAX);
        assert_eq!(stoul("s", "4294967297").unwrap() as u32, 1);
    }

    #[test]
    fn logit_bias_forms() {
        assert_eq!(logit_bias("-l", "15043+1").unwrap(), LogitBias { token: 15043, bias: 1.0 });
        assert_eq!(logit_bias("-l", "15043-inf").unwrap(), LogitBias { token: 15043, bias: f32::NEG_INFINITY });
        assert_eq!(logit_bias("-l", " 7 - 0.5").unwrap(), LogitBias { token: 7, bias: -0.5 });
        assert!(logit_bias("-l", "15043").is_err());
        assert!(logit_bias("-l", "15043*2").is_err());
        assert!(logit_bias("-l", "x+1").is_err());
    }
}
