// C entry points over llama.h functions that can throw a C++ exception through their C
// interface: the tokenizer reaches std::unordered_map::at for byte tokens a vocabulary lacks
// (llama_vocab::byte_to_token), and the piece functions reach std::vector::at. An exception
// that unwinds into Rust aborts the process; these catch every one and say so in `*threw`.

#include "llama.h"

#include <cstdint>

extern "C" {

int32_t llama_sys_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                           int32_t n_tokens_max, bool add_special, bool parse_special, int32_t * threw) noexcept {
    *threw = 0;
    try {
        return llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special);
    } catch (...) {
        *threw = 1;
        return 0;
    }
}

int32_t llama_sys_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length,
                                 int32_t lstrip, bool special, int32_t * threw) noexcept {
    *threw = 0;
    try {
        return llama_token_to_piece(vocab, token, buf, length, lstrip, special);
    } catch (...) {
        *threw = 1;
        return 0;
    }
}

int32_t llama_sys_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                             int32_t text_len_max, bool remove_special, bool unparse_special, int32_t * threw) noexcept {
    *threw = 0;
    try {
        return llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special);
    } catch (...) {
        *threw = 1;
        return 0;
    }
}

}
