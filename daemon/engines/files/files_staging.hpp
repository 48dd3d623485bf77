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

// 64 Mi records: 8 MiB of bits per run at most.
inline constexpr std::uint64_t k_due_bits_budget = std::uint64_t{64} << 20;

// What a purge may hold between the single pass over each file and the renames: the due keys
// (for the journal's intents, written only once the limits allow the run) and open temp copies.
// Past any of these, a file is only counted in its pass and rewritten later by the two-pass path
// (read again, one temp at a time), so memory and the disk space held by temps stay bounded
// whatever the number and size of the files.
struct StagingBudget {
    std::size_t key_bytes = std::size_t{16} << 20; // due keys of all staged files
    std::size_t files = 16;                        // open temp copies (an fd and a lock each)
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
// is a varint length and its bytes. The chunks' capacity is charged to StagingBudget::key_bytes.
class KeyArena {
public:
    explicit KeyArena(std::size_t* budget) : m_budget(budget) {}
    ~KeyArena() { clear(); }
    KeyArena(const KeyArena&) = delete;
    KeyArena& operator=(const KeyArena&) = delete;

    // False (nothing added) once the budget is spent.
    bool add(std::string_view key) {
        char len[10];
        std::size_t n = 0;
        for (std::uint64_t v = key.size();; v >>= 7) {
            len[n++] = static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
            if (v < 0x80) {
                break;
            }
        }
        const std::size_t need = n + key.size();
        if (m_chunks.empty() || m_chunks.back().capacity() - m_chunks.back().size() < need) {
            const std::size_t cap = std::max(k_chunk, need);
            if (*m_budget < cap) {
                return false;
            }
            *m_budget -= cap;
            m_charged += cap;
            m_chunks.emplace_back();
            m_chunks.back().reserve(cap);
        }
        m_chunks.back().append(len, n).append(key);
        ++m_count;
        return true;
    }
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
    }
    std::int64_t count() const { return m_count; }
    void clear() {
        *m_budget += m_charged;
        m_charged = 0;
        m_count = 0;
        m_chunks.clear();
    }

private:
    static constexpr std::size_t k_chunk = std::size_t{256} << 10;
    std::size_t* m_budget;
    std::size_t m_charged = 0;
    std::int64_t m_count = 0;
    std::vector<std::string> m_chunks;
};

// One file's single pass, ready to replace it: the temp copy already holds the new content
// (written, not yet fsynced), the keys are those of the records it leaves out or anonymizes.
struct Staged {
    explicit Staged(std::size_t* key_budget) : keys(key_budget) {}
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
