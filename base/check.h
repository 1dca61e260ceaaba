// SHELF_CHECK(cond): a broken invariant is a bug, not an error. It logs
// file:line and aborts in every build type (as redis's serverAssert does).
#pragma once

#include <cstdio>
#include <cstdlib>

#define SHELF_CHECK(cond)                                                                    \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "shelf: check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (false)
