// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/lru_list.hpp: LruList, the intrusive recency list of ModelCache.
//
// Purpose: an intrusive doubly linked list of the evictable models, most recently used at the
// head, that also sums the bytes of its nodes. A node is any type deriving from LruHook<Node>;
// the list never allocates, so every operation is noexcept and O(1).
//
// Thread safety: none of its own; the owner guards it. ModelCache changes membership only under
// all its stripe locks, and relinks a listed node (move_to_front) under one stripe plus its touch
// lock: move_to_front writes only the links, which lookups never read.
//
// Teardown: the list owns nothing; nodes must leave it (remove) before they are destroyed, or the
// list must be dropped with them.
#ifndef GPUSAFE_DETAIL_CACHE_LRU_LIST_HPP
#define GPUSAFE_DETAIL_CACHE_LRU_LIST_HPP

#include <cstddef>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// The links a node of an LruList carries.
template <class Node>
struct LruHook {
  Node* lru_prev = nullptr;   ///< towards the most recently used
  Node* lru_next = nullptr;   ///< towards the least recently used
  std::size_t lru_bytes = 0;  ///< bytes counted while listed
  bool in_lru = false;
};

/// Intrusive LRU list; head = most recently used, tail = least.
template <class Node>
class LruList {
 public:
  LruList() = default;
  LruList(const LruList&) = delete;
  LruList& operator=(const LruList&) = delete;

  Node* head() const noexcept { return head_; }
  Node* tail() const noexcept { return tail_; }
  /// The next node towards the head (for walks from the tail), or null.
  static Node* newer(const Node& n) noexcept { return n.lru_prev; }
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  /// Sum of the bytes the listed nodes were pushed with.
  std::size_t bytes() const noexcept { return bytes_; }

  /// Lists `n` (not listed) as the most recent, counting `bytes`.
  void push_front(Node& n, std::size_t bytes) noexcept {
    n.lru_prev = nullptr;
    n.lru_next = head_;
    if (head_) head_->lru_prev = &n;
    head_ = &n;
    if (!tail_) tail_ = &n;
    n.in_lru = true;
    n.lru_bytes = bytes;
    bytes_ += bytes;
    ++size_;
  }

  /// Unlists `n` (listed).
  void remove(Node& n) noexcept {
    if (n.lru_prev)
      n.lru_prev->lru_next = n.lru_next;
    else
      head_ = n.lru_next;
    if (n.lru_next)
      n.lru_next->lru_prev = n.lru_prev;
    else
      tail_ = n.lru_prev;
    n.lru_prev = n.lru_next = nullptr;
    n.in_lru = false;
    bytes_ -= n.lru_bytes;
    n.lru_bytes = 0;
    --size_;
  }

  /// Relinks a listed `n` as the most recent. Writes only links.
  void move_to_front(Node& n) noexcept {
    if (head_ == &n) return;
    n.lru_prev->lru_next = n.lru_next;  // not the head, so it has a predecessor
    if (n.lru_next)
      n.lru_next->lru_prev = n.lru_prev;
    else
      tail_ = n.lru_prev;
    n.lru_prev = nullptr;
    n.lru_next = head_;
    head_->lru_prev = &n;
    head_ = &n;
  }

 private:
  Node* head_ = nullptr;
  Node* tail_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_LRU_LIST_HPP
