// Override patterns are compiled and matched by llama.cpp with std::regex (ECMAScript) and
// std::regex_search. Checking them with the same engine is the only way to agree with it exactly:
// another regex library accepts and rejects different patterns.
#include <cstddef>
#include <cstdio>
#include <regex>

extern "C" int llama_runner_regex_check(const char * pattern, char * err, size_t err_len) {
    try {
        std::regex re(pattern);
        return 0;
    } catch (const std::regex_error & e) {
        std::snprintf(err, err_len, "%s", e.what());
        return 1;
    } catch (...) {
        std::snprintf(err, err_len, "unknown error");
        return 1;
    }
}

extern "C" int llama_runner_regex_search(const char * pattern, const char * text) {
    try {
        return std::regex_search(text, std::regex(pattern)) ? 1 : 0;
    } catch (...) {
        return -1;
    }
}
