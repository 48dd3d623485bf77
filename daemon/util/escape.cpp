#include "retentiond/escape.hpp"

namespace retentiond {

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&#39;";
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string md_table_cell(std::string_view s) {
    std::string out;
    for (const char c : s) {
        switch (c) {
        case '|':
            out += "\\|";
            break;
        case '\n':
        case '\r':
            out += ' ';
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '&':
            out += "&amp;";
            break;
        default:
            out += c;
        }
    }
    return out;
}

namespace csv {

void append_field(std::string& out, std::string_view value, char delimiter) {
    if (value.find_first_of(std::string{'"', '\r', '\n', delimiter}) == std::string_view::npos) {
        out.append(value);
        return;
    }
    out.push_back('"');
    for (const char c : value) {
        out.push_back(c);
        if (c == '"') {
            out.push_back('"');
        }
    }
    out.push_back('"');
}

} // namespace csv

} // namespace retentiond
