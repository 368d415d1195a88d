// Reference drafts of llama.cpp's ngram-map drafters (common/ngram-map.h), driven by a script
// on standard input, one command per line:
//   b T...   common_ngram_map_begin with the tokens T...
//   d T...   common_ngram_map_draft with the text T... minus its last token, and that token as
//            the one just sampled; prints "draft:" and the drafted tokens
//   a N      common_ngram_map_accept(N)
//
// usage: ngram_map SIZE_N SIZE_M KEY_ONLY MIN_HITS < SCRIPT
#include "ngram-map.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

int main(int argc, char ** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s SIZE_N SIZE_M KEY_ONLY MIN_HITS < SCRIPT\n", argv[0]);
        return 2;
    }
    common_ngram_map map((uint16_t) std::atoi(argv[1]), (uint16_t) std::atoi(argv[2]), std::atoi(argv[3]) != 0,
                         (uint16_t) std::atoi(argv[4]));
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string cmd;
        in >> cmd;
        if (cmd == "a") {
            int n = 0;
            in >> n;
            common_ngram_map_accept(map, (uint16_t) n);
            continue;
        }
        llama_tokens tokens;
        llama_token t;
        while (in >> t) {
            tokens.push_back(t);
        }
        if (cmd == "b") {
            common_ngram_map_begin(map, tokens);
        } else if (cmd == "d" && !tokens.empty()) {
            const llama_token sampled = tokens.back();
            tokens.pop_back();
            llama_tokens draft;
            common_ngram_map_draft(map, tokens, sampled, draft);
            std::printf("draft:");
            for (llama_token d : draft) {
                std::printf(" %d", d);
            }
            std::printf("\n");
        }
    }
    return 0;
}
