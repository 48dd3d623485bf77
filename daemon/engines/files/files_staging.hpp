#pragma once

// Files engine, staging: the verdict bits kept for a second pass, the staging budget and staged
// temp copies of one purge, a file's scan, and the batches journaled for a file. Private to the
// files engine.

#include "files_records.hpp"

#include <unordered_set>

namespace retentiond::files_detail {

// Which records pass 1 found due, one bit per record in file order, so that pass 2 only finds
// the boundaries of the kept ones. Bounded: records past the budget are decided again in pass 2.
class DueBits {
public:
    std::uint64_t covered() const { return m_covered; }
    bool due(std::uint64_t i) const { return (m_words[i / 64] >> (i % 64) & 1U) != 0; }
    // Returns false once the budget (records, shared by all files of a run) is spent.
    bool push(bool due, std::uint64_t& budget) {
        if (budget == 0) {
            return false;
        }
        --budget;
        if (m_covered % 64 == 0) {
            m_words.push_back(0);
        }
        if (due) {
            m_words.back() |= std::uint64_t{1} << (m_covered % 64);
        }
        ++m_covered;
        return true;
    }

private:
    std::vector<std::uint64_t> m_words;
    std::uint64_t m_covered = 0;
};

// 32 Mi records: 4 MiB of bits per run at most.
inline constexpr std::uint64_t k_due_bits_budget = std::uint64_t{32} << 20;

// What a purge may hold between the single pass over each file and the renames: the due keys
// (for the journal's intents, written only once the limits allow the run) and open temp copies.
// Past any of these, a file is only counted in its pass and rewritten later by the two-pass path
// (read again, one temp at a time), so memory and the disk space held by temps stay bounded
// whatever the number and size of the files.
struct StagingBudget {
    // Due keys of all staged files held in memory; past it they are spilled to a file.
    std::size_t key_bytes = std::size_t{4} << 20;
    std::size_t files = 16; // open temp copies (an fd and a lock each)
    // Input bytes of the staged files: their temps are all on disk at once. The first file is
    // staged whatever its size (a rewrite needs that much room anyway).
    std::uint64_t bytes = std::uint64_t{4} << 30;
    std::size_t staged = 0;

    bool allows(std::uint64_t size) const { return files > 0 && (staged == 0 || size <= bytes); }
    void take(std::uint64_t size) {
        --files;
        ++staged;
        bytes -= std::min(size, bytes);
    }
};

// Due keys in file order, in chunks that are never reallocated (no copy, no doubling): each key
// is a varint length and its bytes. The chunks' capacity is charged to StagingBudget::key_bytes;
// past it, the keys go on to a spill file (unlinked from its creation: O_TMPFILE in the
// directory of the file being rewritten, which its temp copy needs room in anyway), through one
// chunk-sized buffer, so that memory stays bounded whatever the number of due records.
class KeyArena {
public:
    KeyArena(std::size_t* budget, fs::path spill_dir)
        : m_budget(budget), m_spill_dir(std::move(spill_dir)) {}
    ~KeyArena() { clear(); }
    KeyArena(const KeyArena&) = delete;
    KeyArena& operator=(const KeyArena&) = delete;

    // False (nothing added) when the key can be neither held nor spilled (no spill file).
    bool add(std::string_view key) {
        char len[10];
        const std::size_t n = varint(key.size(), len);
        const std::size_t need = n + key.size();
        if (!spilled() && !room(need) && !start_spill()) {
            return false;
        }
        if (spilled()) {
            return spill(std::string_view(len, n), key);
        }
        m_chunks.back().append(len, n).append(key);
        ++m_count;
        return true;
    }
    // Calls f with each key in the order they were added; throws when the spill file cannot be
    // read back.
    template <class F> void for_each(F&& f) const {
        for (const auto& chunk : m_chunks) {
            std::size_t i = 0;
            while (i < chunk.size()) {
                std::uint64_t len = 0;
                for (int shift = 0;; shift += 7) {
                    const auto b = static_cast<unsigned char>(chunk[i++]);
                    len |= std::uint64_t{b & 0x7FU} << shift;
                    if ((b & 0x80U) == 0) {
                        break;
                    }
                }
                f(std::string_view(chunk).substr(i, len));
                i += len;
            }
        }
        if (spilled()) {
            read_spill(f);
        }
    }
    // After the last add(): writes the spill buffer out and frees it. False on a write error
    // (then the caller falls back to a second read).
    bool seal() {
        if (!spilled()) {
            return true;
        }
        try {
            flush_spill();
        } catch (const std::exception&) {
            return false;
        }
        m_spill_buf = std::string();
        return true;
    }
    std::int64_t count() const { return m_count; }
    bool spilled() const { return m_spill.get() >= 0; }
    void clear() {
        *m_budget += m_charged;
        m_charged = 0;
        m_count = 0;
        m_chunks.clear();
        m_spill.reset();
        m_spill_buf = std::string();
        m_spill_size = 0;
    }

private:
    static constexpr std::size_t k_chunk = std::size_t{256} << 10;

    static std::size_t varint(std::uint64_t v, char* out) {
        std::size_t n = 0;
        for (;; v >>= 7) {
            out[n++] = static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
            if (v < 0x80) {
                return n;
            }
        }
    }
    // Whether the last chunk has room for need bytes, taking a new chunk from the budget.
    bool room(std::size_t need) {
        if (!m_chunks.empty() && m_chunks.back().capacity() - m_chunks.back().size() >= need) {
            return true;
        }
        const std::size_t cap = std::max(k_chunk, need);
        if (*m_budget < cap) {
            return false;
        }
        *m_budget -= cap;
        m_charged += cap;
        m_chunks.emplace_back();
        m_chunks.back().reserve(cap);
        return true;
    }
    bool start_spill() {
        m_spill = Fd(::open(m_spill_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
        if (!spilled()) {
            return false; // no O_TMPFILE here: the caller falls back to a second read
        }
        m_spill_buf.reserve(k_chunk);
        return true;
    }
    bool spill(std::string_view len, std::string_view key) {
        try {
            for (const auto part : {len, key}) {
                if (m_spill_buf.size() + part.size() > k_chunk) {
                    flush_spill();
                }
                if (part.size() > k_chunk) {
                    write_spill(part);
                } else {
                    m_spill_buf.append(part);
                }
            }
        } catch (const std::exception&) {
            return false; // a write error: the caller falls back to a second read
        }
        ++m_count;
        return true;
    }
    void flush_spill() {
        write_spill(m_spill_buf);
        m_spill_buf.clear();
    }
    void write_spill(std::string_view bytes) {
        for (std::size_t done = 0; done < bytes.size();) {
            const ssize_t w = ::pwrite(m_spill.get(), bytes.data() + done, bytes.size() - done,
                                       static_cast<off_t>(m_spill_size));
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w < 0) {
                throw_errno("write spilled keys");
            }
            done += static_cast<std::size_t>(w);
            m_spill_size += static_cast<std::uint64_t>(w);
        }
    }
    template <class F> void read_spill(F&& f) const;

    std::size_t* m_budget;
    fs::path m_spill_dir;
    std::size_t m_charged = 0;
    std::int64_t m_count = 0;
    std::vector<std::string> m_chunks;
    Fd m_spill;                     // the spill file, once the budget is spent
    std::string m_spill_buf;        // keys not yet written to it
    std::uint64_t m_spill_size = 0; // bytes written to it
};

// Reads the spill file back (seal() wrote what was buffered).
template <class F> void KeyArena::read_spill(F&& f) const {
    std::string buf;
    std::size_t pos = 0;
    std::uint64_t off = 0;
    // Makes n bytes from pos available in buf (false at the end of the keys).
    auto have = [&](std::size_t n) {
        while (buf.size() - pos < n) {
            buf.erase(0, pos);
            pos = 0;
            if (off == m_spill_size) {
                return false;
            }
            const std::size_t want = std::max(k_chunk, n - buf.size());
            const std::size_t at = buf.size();
            buf.resize(at +
                       static_cast<std::size_t>(std::min<std::uint64_t>(want, m_spill_size - off)));
            const ssize_t got =
                ::pread(m_spill.get(), buf.data() + at, buf.size() - at, static_cast<off_t>(off));
            if (got <= 0) {
                if (got < 0 && errno == EINTR) {
                    buf.resize(at);
                    continue;
                }
                throw std::runtime_error("cannot read the spilled keys back");
            }
            buf.resize(at + static_cast<std::size_t>(got));
            off += static_cast<std::uint64_t>(got);
        }
        return true;
    };
    for (;;) {
        if (!have(1)) {
            break;
        }
        std::uint64_t len = 0;
        for (int shift = 0;; shift += 7) {
            if (!have(1)) {
                throw std::runtime_error("spilled keys cut short");
            }
            const auto b = static_cast<unsigned char>(buf[pos++]);
            len |= std::uint64_t{b & 0x7FU} << shift;
            if ((b & 0x80U) == 0) {
                break;
            }
        }
        if (!have(static_cast<std::size_t>(len))) {
            throw std::runtime_error("spilled keys cut short");
        }
        f(std::string_view(buf).substr(pos, static_cast<std::size_t>(len)));
        pos += static_cast<std::size_t>(len);
    }
}

// One file's single pass, ready to replace it: the temp copy already holds the new content
// (written, not yet fsynced), the keys are those of the records it leaves out or anonymizes.
struct Staged {
    Staged(std::size_t* key_budget, fs::path spill_dir) : keys(key_budget, std::move(spill_dir)) {}
    std::optional<TempFile> tmp; // empty when the file is to be deleted
    bool remove_file = false;
    struct stat st {}; // the original's, at the pass: mode and owner for the temp
    KeyArena keys;
};

struct Scan {
    Match file;
    FileIdentity id;
    DryRun figures;
    std::int64_t records = 0;
    std::int64_t due = 0;
    DueBits bits;                   // filled by purge's pass, for the two-pass path
    std::unique_ptr<Staged> staged; // the single pass's output; null: rewrite() reads again
    bool changed = false;           // the file moved while its pass read it
    std::string error;              // "rel:line: reason": a record does not parse
    std::string failure;            // "rel: reason": the file cannot be read (not a parse error)
};

inline std::string describe(const std::exception& e) {
    if (const auto* se = dynamic_cast<const std::system_error*>(&e)) {
        return std::string(se->what());
    }
    return e.what();
}

// Collects due keys into journal batches of batch_size.
class Batcher {
public:
    Batcher(BatchJournal* journal, BatchIntent base, std::size_t size)
        : m_journal(journal), m_base(std::move(base)), m_size(std::max<std::size_t>(size, 1)) {}
    void add(std::string key) {
        m_base.keys.push_back(std::move(key));
        if (m_base.keys.size() >= m_size) {
            flush();
        }
    }
    void flush() {
        if (m_base.keys.empty()) {
            return;
        }
        const auto n = static_cast<std::int64_t>(m_base.keys.size());
        m_batches.emplace_back(m_journal != nullptr ? m_journal->intent(m_base) : std::string(), n);
        m_base.keys.clear();
    }
    void outcome(bool committed) {
        if (m_journal == nullptr) {
            return;
        }
        for (const auto& [id, n] : m_batches) {
            m_journal->outcome(id, committed, committed ? n : 0);
        }
    }
    std::int64_t batches() const { return static_cast<std::int64_t>(m_batches.size()); }

private:
    BatchJournal* m_journal;
    BatchIntent m_base;
    std::size_t m_size;
    std::vector<std::pair<std::string, std::int64_t>> m_batches;
};

} // namespace retentiond::files_detail
