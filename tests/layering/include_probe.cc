// One include, compiled with the include path of one target: the layering
// checks of tests/layering/CMakeLists.txt. SHELF_PROBE_HEADER is set per probe.
#include SHELF_PROBE_HEADER
