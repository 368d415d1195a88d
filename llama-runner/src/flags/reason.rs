//! Why a flag was refused: the typed reason of [`Error::Flag`](crate::Error::Flag).

use crate::options::CpuMaskError;

/// The C++ number parser llama.cpp reads a flag's value with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CParser {
    /// `std::stoi` (a C `int`).
    Stoi,
    /// `std::stoul` (a 64-bit `unsigned long`).
    Stoul,
    /// `std::stof` (a `float`).
    Stof,
}

impl CParser {
    /// The function's name (`std::stoi`).
    pub fn name(self) -> &'static str {
        match self {
            CParser::Stoi => "std::stoi",
            CParser::Stoul => "std::stoul",
            CParser::Stof => "std::stof",
        }
    }

    /// What its result must fit, in words, if anything is said about it (` for a C int`).
    fn range_suffix(self) -> &'static str {
        match self {
            CParser::Stoi => " for a C int",
            CParser::Stoul => "",
            CParser::Stof => " for a float",
        }
    }
}

/// Why a flag (or the `LLAMA_ARG_*` variable standing for one) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagReason {
    /// A word starting with `-` that is no flag [`parse`](super::parse) knows: unknown to
    /// llama.cpp too, or a llama.cpp flag whose option [`RunOptions`](crate::RunOptions) does
    /// not hold (`-n`, `-p`, `-Cb`).
    #[error("unknown flag, or a llama.cpp flag that RunOptions does not hold")]
    UnknownFlag,
    /// A word that is not a flag where a flag was expected.
    #[error("not a flag: a value without its flag, or a stray word")]
    NotAFlag,
    /// `--flag=value`, a form llama.cpp's parser does not have.
    #[error("llama.cpp does not accept `{flag}=VALUE`; write `{flag} VALUE`")]
    EqualsValue {
        /// The flag before the `=`.
        flag: String,
    },
    /// A flag that takes a value came last.
    #[error("missing value")]
    MissingValue,
    /// A flag string that cannot be split into words.
    #[error("unbalanced quote or trailing backslash")]
    UnbalancedQuote,
    /// A value holding a NUL byte, which would cut it short on its way to C.
    #[error("the value contains a NUL byte")]
    NulByte,
    /// A switch variable whose value is neither true nor false for llama.cpp.
    #[error("not a boolean llama.cpp reads (on/off, enabled/disabled, true/false, 1/0)")]
    NotABoolean,
    /// No number at the start of the value: llama.cpp's parser throws.
    #[error("not a number (llama.cpp's {} fails)", .parser.name())]
    NotANumber {
        /// The parser that fails.
        parser: CParser,
    },
    /// A number too large (or too small) for the parser's type: llama.cpp's parser throws.
    #[error("out of range{} (llama.cpp's {} fails)", .parser.range_suffix(), .parser.name())]
    OutOfRange {
        /// The parser that fails.
        parser: CParser,
    },
    /// A hexadecimal floating-point number, which `std::stof` takes and this parser does not.
    #[error("hexadecimal floating-point numbers are not supported here")]
    HexFloat,
    /// A number below the smallest value the option takes.
    #[error("{value} {}{}", if *.min == 0 { "is negative".to_string() } else { format!("is less than {min}") }, note_suffix(.note))]
    TooSmall {
        /// The number read.
        value: i32,
        /// The smallest value taken.
        min: i32,
        /// What llama.cpp makes of such a value, when that is worth saying.
        note: Option<&'static str>,
    },
    /// A number outside a closed range.
    #[error("{value} is not a {what} from {min} to {max}")]
    NotInRange {
        /// The number read.
        value: i32,
        /// What the number stands for (`priority`).
        what: &'static str,
        /// The smallest value taken.
        min: i32,
        /// The largest value taken.
        max: i32,
    },
    /// A value that is none of the words the flag takes.
    #[error("not {}{}", or_list(.accepted), note_suffix(.note))]
    NotOneOf {
        /// The words taken.
        accepted: &'static [&'static str],
        /// Other spellings llama.cpp takes too, in words.
        note: Option<&'static str>,
    },
    /// A value that is none of an option enum's llama.cpp spellings.
    #[error("unknown {what} (llama.cpp accepts exactly {})", .accepted.join(", "))]
    UnknownName {
        /// What the value names (`cache type`).
        what: &'static str,
        /// The spellings taken.
        accepted: &'static [&'static str],
    },
    /// An empty model path.
    #[error("empty path")]
    EmptyPath,
    /// A `-C` mask this runner refuses.
    #[error(transparent)]
    CpuMask(#[from] CpuMaskError),
    /// A `-Cr` value without a `-`.
    #[error("not a range LO-HI")]
    NotARange,
    /// A `-Cr` bound past the last CPU llama.cpp's masks hold.
    #[error("CPU {cpu} is out of bounds (0..{last})")]
    CpuOutOfBounds {
        /// The CPU given.
        cpu: u64,
        /// The last CPU a mask holds.
        last: usize,
    },
    /// One `PATTERN=BUFFER` rule of `-ot` is wrong.
    #[error("rule `{rule}`: {problem}")]
    OverrideRule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        problem: RuleProblem,
    },
    /// One device name of `-dev` is wrong.
    #[error("device `{name}`: {problem}")]
    Device {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        problem: DeviceProblem,
    },
    /// A `-ts` list with an empty proportion where llama.cpp's `std::stof` sees one.
    #[error("an empty proportion (llama.cpp's std::stof fails)")]
    EmptyProportion,
    /// More `-ts` proportions than llama.cpp takes.
    #[error("{count} proportions: llama.cpp refuses {max} or more (llama_max_devices() is {max})")]
    TooManyProportions {
        /// Proportions given.
        count: usize,
        /// `llama_max_devices()`.
        max: usize,
    },
    /// A `-ts` proportion that is infinite, NaN or negative.
    #[error("proportion `{proportion}` is not a finite, non-negative number")]
    BadProportion {
        /// The proportion as written.
        proportion: String,
    },
    /// More tensor overrides than llama.cpp takes, counting those of `-cmoe`/`-ncmoe`.
    #[error("{count} tensor overrides, more than llama.cpp's {max}")]
    TooManyOverrides {
        /// Overrides given.
        count: usize,
        /// [`max_tensor_overrides`](crate::options::max_tensor_overrides).
        max: usize,
    },
    /// An `-ncmoe` count whose per-layer rules alone are more overrides than llama.cpp takes.
    #[error("more than llama.cpp's {max} tensor overrides")]
    NCpuMoeTooLarge {
        /// [`max_tensor_overrides`](crate::options::max_tensor_overrides).
        max: usize,
    },
    /// A llama.cpp flag whose feature this runner does not implement.
    #[error("not supported by {by} yet")]
    Unsupported {
        /// What does not support it (`llama_runner's sampler`).
        by: &'static str,
    },
    /// A reason given in words by a parser that has no typed one for it yet.
    #[error("{0}")]
    Other(String),
}

/// What is wrong with one `-ot` rule ([`FlagReason::OverrideRule`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleProblem {
    /// No `=` in the rule.
    #[error("no `=` between the tensor name pattern and the buffer type")]
    NoEquals,
    /// An empty pattern.
    #[error("empty pattern (it would match every tensor)")]
    EmptyPattern,
    /// A pattern `std::regex` refuses.
    #[error("the pattern is not a valid std::regex: {message}")]
    Regex {
        /// What `std::regex` said (a C++ exception's text, not an error value).
        message: String,
    },
    /// An empty buffer type.
    #[error("empty buffer type")]
    EmptyBufferType,
    /// `cpu` or `Cpu` for `CPU`.
    #[error("unknown buffer type `{name}`: llama.cpp's names are case-sensitive (`CPU`)")]
    CaseSensitive {
        /// The name given.
        name: String,
    },
    /// A buffer type holding `=`, a space or a comma: part of a pattern or of another rule.
    #[error(
        "unknown buffer type `{name}` (llama.cpp splits a rule at its first `=`, so patterns cannot hold `=`, \
         and does not trim spaces)"
    )]
    SplitName {
        /// The name given.
        name: String,
    },
    /// A host buffer type (`CUDA_Host`).
    #[error("`{name}` is a host buffer type, which llama.cpp's -ot does not offer; use `CPU`")]
    HostBuffer {
        /// The name given.
        name: String,
    },
}

/// What is wrong with one `-dev` name ([`FlagReason::Device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceProblem {
    /// An empty name.
    #[error("empty name")]
    EmptyName,
    /// `none` beside other names.
    #[error("`none` must be the only entry")]
    NoneNotAlone,
    /// `CPU`, which llama.cpp refuses in `-dev`.
    #[error("llama.cpp refuses CPU devices in -dev (they are always used)")]
    Cpu,
}

fn note_suffix(note: &Option<&'static str>) -> String {
    note.map_or_else(String::new, |n| format!(" ({n})"))
}

/// `a, b or c`.
pub(super) fn or_list(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}
