// Seqlock helpers for the records only the daemon writes and any client
// reads without a lock (docs/shm_layout.md, "Reading the index without the
// daemon"). Every word of such a record is read and written through
// std::atomic_ref, relaxed, so a read that races a write is a torn value to
// be thrown away, never undefined behaviour; the sequence counter and its
// fences order them.
//
//   writer (the daemon, one thread):  begin_write(seq) ... store_words ... end_write(seq)
//   reader (any process):             s = read_begin(seq); ... load_words ...
//                                     if (!read_end(seq, s)) retry;
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace shelf::shm {

// Copies `bytes` (a multiple of 8, both 8-aligned) as relaxed 64-bit loads.
// Each word goes into `dst` by memcpy, not through a uint64_t*: `dst` is
// usually a layout struct whose fields are then read as u32s, and stores
// through a uint64_t* do not, for the optimiser, write those (strict
// aliasing; g++ 12 -O3 then warns that the fields may be uninitialised).
inline void load_words(void* dst, const void* src, size_t bytes) {
  auto* out = static_cast<std::byte*>(dst);
  auto* in = const_cast<uint64_t*>(static_cast<const uint64_t*>(src));
  for (size_t i = 0; i < bytes / 8; ++i) {
    const uint64_t word = std::atomic_ref<uint64_t>(in[i]).load(std::memory_order_relaxed);
    std::memcpy(out + 8 * i, &word, 8);
  }
}
// Copies `bytes` (a multiple of 8, both 8-aligned) as relaxed 64-bit stores;
// each word is read from `src` by memcpy, as load_words() writes them.
inline void store_words(void* dst, const void* src, size_t bytes) {
  auto* out = static_cast<uint64_t*>(dst);
  auto* in = static_cast<const std::byte*>(src);
  for (size_t i = 0; i < bytes / 8; ++i) {
    uint64_t word;
    std::memcpy(&word, in + 8 * i, 8);
    std::atomic_ref<uint64_t>(out[i]).store(word, std::memory_order_relaxed);
  }
}
inline uint64_t load_word(const uint64_t& word) {
  return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(word)).load(std::memory_order_relaxed);
}
inline void store_word(uint64_t& word, uint64_t value) {
  std::atomic_ref<uint64_t>(word).store(value, std::memory_order_relaxed);
}

// Makes `seq` odd. The release fence orders the odd value before every
// store that follows; pairs with the acquire fence in read_end().
inline void begin_write(uint64_t& seq) {
  std::atomic_ref<uint64_t> s(seq);
  s.store(s.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}
// Makes `seq` even again. Release: orders every store before it before the
// even value; pairs with the acquire load in read_begin().
inline void end_write(uint64_t& seq) {
  std::atomic_ref<uint64_t> s(seq);
  s.store(s.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}
// The value to hand to read_end(); odd means a write is in progress (retry).
inline uint64_t read_begin(const uint64_t& seq) {
  return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(seq)).load(std::memory_order_acquire);
}
// True when nothing was written since read_begin() returned `begun` (even):
// the loads in between saw one consistent state. The acquire fence keeps
// those loads before the re-read of `seq`; pairs with begin_write()'s fence.
inline bool read_end(const uint64_t& seq, uint64_t begun) {
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t now =
      std::atomic_ref<uint64_t>(const_cast<uint64_t&>(seq)).load(std::memory_order_relaxed);
  return begun % 2 == 0 && now == begun;
}

}  // namespace shelf::shm
