// LruCache: a bounded map from a key to a shared, immutable value, evicting
// the least recently used entry once it holds `capacity` entries.
//
// The fast layers cache what is expensive to build per problem (oneDNN
// primitives take milliseconds to create) but cheap to keep. A server sees an
// open-ended stream of shapes, so the cache must be bounded; values are handed
// out as shared_ptr<const V> so an evicted entry stays alive for the calls
// still running with it.
//
// Thread-safety: all methods may be called concurrently. Values are built
// outside the lock (see GetOrCreate), so a slow build never blocks lookups.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_LRU_CACHE_H_
#define LAYERSERVE_LIB_LAYERS_FAST_LRU_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace layerserve::fast {

// K needs operator<; V is anything.
template <typename K, typename V>
class LruCache {
 public:
  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;
  };

  // capacity >= 1.
  explicit LruCache(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;

  // The cached value for `key`, or the value `make()` returns (a
  // StatusOr<std::shared_ptr<const V>>), which is then cached. `make` runs
  // without the lock held; when two threads miss on the same key at once,
  // both build and the first to finish wins (the other's value is used for
  // its own call and dropped). A failed `make` is returned and not cached.
  template <typename Make>
  absl::StatusOr<std::shared_ptr<const V>> GetOrCreate(const K& key,
                                                       Make&& make) {
    {
      absl::MutexLock lock(&mu_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        ++stats_.hits;
        order_.splice(order_.begin(), order_, it->second);
        return it->second->second;
      }
      ++stats_.misses;
    }
    absl::StatusOr<std::shared_ptr<const V>> made = make();
    if (!made.ok()) return made.status();
    absl::MutexLock lock(&mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return it->second->second;
    order_.emplace_front(key, *made);
    index_.emplace(key, order_.begin());
    while (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
      ++stats_.evictions;
    }
    return made;
  }

  size_t size() const {
    absl::MutexLock lock(&mu_);
    return order_.size();
  }
  size_t capacity() const { return capacity_; }
  Stats stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }

 private:
  using Entry = std::pair<K, std::shared_ptr<const V>>;

  const size_t capacity_;
  mutable absl::Mutex mu_;
  // Most recently used first.
  std::list<Entry> order_ ABSL_GUARDED_BY(mu_);
  std::map<K, typename std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace layerserve::fast

#endif  // LAYERSERVE_LIB_LAYERS_FAST_LRU_CACHE_H_
