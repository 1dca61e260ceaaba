# Per-layer include roots: the layering rule of STYLE.md section 1, enforced
# by the compiler instead of a grep.
#
# Every in-tree include names its layer ("shm/layout.h", "server/store.h"),
# so the repository root used to be the one include directory, and with it
# anything could include anything. Instead each layer gets an include root of
# its own in the build tree that holds one symlink:
#
#   ${PROJECT_BINARY_DIR}/include/shm/shm -> ${PROJECT_SOURCE_DIR}/shm
#
# and only the targets allowed to see shm/ get ${PROJECT_BINARY_DIR}/include/shm
# on their include path, through CMake usage requirements (PUBLIC/PRIVATE
# target_include_directories and target_link_libraries). Bazel's
# _virtual_includes work the same way.
#
# Why symlinks rather than moving headers to <layer>/include/<layer>/: every
# `#include "shm/layout.h"` line and every header path stays as it is, so
# the change is build files only (no churn in sources others are editing, git
# blame and the docs' paths unchanged), and a layer's .h files stay next to
# its .cc files. The cost is one symlink per layer, made at configure time,
# so this needs a file system with symlinks (as Debian has). A quoted include
# is looked up first in the including file's own directory (shm/), where
# "shm/layout.h" does not exist, so that lookup cannot bypass the roots.
#
# tests/layering/ checks that each forbidden include fails to compile.

# shelf_layer_root(<layer> <out-var>): makes the root for the source
# directory <layer> and stores its path in <out-var>.
function(shelf_layer_root layer out_var)
  set(root ${PROJECT_BINARY_DIR}/include/${layer})
  if(NOT IS_SYMLINK ${root}/${layer})
    file(MAKE_DIRECTORY ${root})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${layer} ${root}/${layer} SYMBOLIC)
  endif()
  set(${out_var} ${root} PARENT_SCOPE)
endfunction()
