// Unit tests of detail::LruList, the intrusive recency list of ModelCache.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "gpusafe/detail/cache/lru_list.hpp"

namespace gd = gpusafe::detail;

namespace {

struct Node : gd::LruHook<Node> {
  explicit Node(int i) : id(i) {}
  int id;
};

// Ids from the least to the most recently used, checking the links both ways.
std::vector<int> oldest_first(const gd::LruList<Node>& list) {
  std::vector<int> ids;
  const Node* newer_seen = nullptr;
  for (Node* n = list.tail(); n; n = gd::LruList<Node>::newer(*n)) {
    EXPECT_TRUE(n->in_lru);
    if (newer_seen) {
      EXPECT_EQ(n->lru_next, newer_seen);
    } else {
      EXPECT_EQ(n->lru_next, nullptr);
    }
    newer_seen = n;
    ids.push_back(n->id);
  }
  EXPECT_EQ(newer_seen, list.head());
  EXPECT_EQ(ids.size(), list.size());
  return ids;
}

TEST(CacheLruList, EmptyList) {
  gd::LruList<Node> list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.head(), nullptr);
  EXPECT_EQ(list.tail(), nullptr);
  EXPECT_EQ(list.bytes(), 0u);
  EXPECT_EQ(list.size(), 0u);
}

TEST(CacheLruList, PushFrontOrdersByRecencyAndSumsBytes) {
  gd::LruList<Node> list;
  Node a(1), b(2), c(3);
  list.push_front(a, 10);
  list.push_front(b, 20);
  list.push_front(c, 30);
  EXPECT_EQ(oldest_first(list), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(list.bytes(), 60u);
  EXPECT_EQ(list.head(), &c);
  EXPECT_EQ(list.tail(), &a);
}

TEST(CacheLruList, MoveToFrontFromTailMiddleAndHead) {
  gd::LruList<Node> list;
  Node a(1), b(2), c(3);
  list.push_front(a, 1);
  list.push_front(b, 1);
  list.push_front(c, 1);
  list.move_to_front(a);  // tail
  EXPECT_EQ(oldest_first(list), (std::vector<int>{2, 3, 1}));
  list.move_to_front(c);  // middle
  EXPECT_EQ(oldest_first(list), (std::vector<int>{2, 1, 3}));
  list.move_to_front(c);  // head: no change
  EXPECT_EQ(oldest_first(list), (std::vector<int>{2, 1, 3}));
  EXPECT_EQ(list.bytes(), 3u);
}

TEST(CacheLruList, RemoveHeadMiddleTailAndLast) {
  gd::LruList<Node> list;
  Node a(1), b(2), c(3), d(4);
  list.push_front(a, 1);
  list.push_front(b, 2);
  list.push_front(c, 4);
  list.push_front(d, 8);
  list.remove(b);  // middle
  EXPECT_FALSE(b.in_lru);
  EXPECT_EQ(b.lru_prev, nullptr);
  EXPECT_EQ(b.lru_next, nullptr);
  EXPECT_EQ(oldest_first(list), (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(list.bytes(), 13u);
  list.remove(d);  // head
  EXPECT_EQ(oldest_first(list), (std::vector<int>{1, 3}));
  list.remove(a);  // tail
  EXPECT_EQ(oldest_first(list), (std::vector<int>{3}));
  list.remove(c);  // last
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.bytes(), 0u);
  EXPECT_EQ(list.tail(), nullptr);
}

TEST(CacheLruList, BytesAreThosePushedEvenIfTheOwnerChangesItsOwn) {
  gd::LruList<Node> list;
  Node a(1);
  list.push_front(a, 100);
  list.remove(a);
  EXPECT_EQ(list.bytes(), 0u);
  list.push_front(a, 7);  // a node may be listed again
  EXPECT_EQ(list.bytes(), 7u);
  EXPECT_EQ(oldest_first(list), (std::vector<int>{1}));
}

TEST(CacheLruList, ManyOperationsMatchAReferenceOrder) {
  gd::LruList<Node> list;
  std::vector<Node> nodes;
  nodes.reserve(32);
  for (int i = 0; i < 32; ++i) nodes.emplace_back(i);
  std::vector<int> ref;  // oldest first
  unsigned x = 12345;
  for (int step = 0; step < 2000; ++step) {
    x = x * 1103515245u + 12345u;
    Node& n = nodes[(x >> 8) % nodes.size()];
    const unsigned op = (x >> 20) % 3;
    auto pos = std::find(ref.begin(), ref.end(), n.id);
    if (!n.in_lru) {
      list.push_front(n, 1);
      ref.push_back(n.id);
    } else if (op == 0) {
      list.remove(n);
      ref.erase(pos);
    } else {
      list.move_to_front(n);
      ref.erase(pos);
      ref.push_back(n.id);
    }
    ASSERT_EQ(list.bytes(), ref.size());
  }
  EXPECT_EQ(oldest_first(list), ref);
}

}  // namespace
