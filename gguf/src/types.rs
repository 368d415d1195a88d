//! The tensor element types (`enum ggml_type`) of the pinned ggml, with their block sizes.

/// One `ggml_type`: its name, the number of values per block and the bytes per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    /// The type id (`GGML_TYPE_*`).
    pub id: u32,
    /// ggml's name for it (`q4_K`, `f32`).
    pub name: &'static str,
    /// Values per block (1 for plain types).
    pub block_len: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

impl GgmlType {
    /// Bytes of `n_elements` values, or `None` when `n_elements` is not a whole number of blocks
    /// or the size overflows.
    pub fn nbytes(&self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_len) {
            return None;
        }
        (n_elements / self.block_len).checked_mul(self.block_bytes)
    }
}

/// (id, name, values per block, bytes per block): `type_traits` in ggml/src/ggml.c with the
/// block structs of ggml-common.h. Ids 4, 5 and 31 to 38 were removed from ggml and are rejected
/// by gguf.cpp (their block size is 0).
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "f32", 1, 4),
    (1, "f16", 1, 2),
    (2, "q4_0", 32, 18),
    (3, "q4_1", 32, 20),
    (6, "q5_0", 32, 22),
    (7, "q5_1", 32, 24),
    (8, "q8_0", 32, 34),
    (9, "q8_1", 32, 36),
    (10, "q2_K", 256, 84),
    (11, "q3_K", 256, 110),
    (12, "q4_K", 256, 144),
    (13, "q5_K", 256, 176),
    (14, "q6_K", 256, 210),
    (15, "q8_K", 256, 292),
    (16, "iq2_xxs", 256, 66),
    (17, "iq2_xs", 256, 74),
    (18, "iq3_xxs", 256, 98),
    (19, "iq1_s", 256, 50),
    (20, "iq4_nl", 32, 18),
    (21, "iq3_s", 256, 110),
    (22, "iq2_s", 256, 82),
    (23, "iq4_xs", 256, 136),
    (24, "i8", 1, 1),
    (25, "i16", 1, 2),
    (26, "i32", 1, 4),
    (27, "i64", 1, 8),
    (28, "f64", 1, 8),
    (29, "iq1_m", 256, 56),
    (30, "bf16", 1, 2),
    (34, "tq1_0", 256, 54),
    (35, "tq2_0", 256, 66),
    (39, "mxfp4", 32, 17),
    (40, "nvfp4", 64, 36),
    (41, "q1_0", 128, 18),
    (42, "q2_0", 64, 18),
];

/// The type with id `id`, if the pinned ggml reads it from GGUF files.
pub fn ggml_type(id: u32) -> Option<GgmlType> {
    TYPES.iter().find(|t| t.0 == id).map(|&(id, name, block_len, block_bytes)| GgmlType {
        id,
        name,
        block_len,
        block_bytes,
    })
}
