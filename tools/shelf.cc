// Placeholder while the CLI is written.
#include <cstdio>
int main() {
  std::fprintf(stderr, "shelf: not built yet\n");
  return 1;
}
