# The installed C++ package: the client library, the static libraries it
# links, the public <shelf/*.h> headers, a CMake package and a pkg-config file.
#
#   cmake --install build/release --prefix /opt/shelf --component devel
#   # then, in a user's CMakeLists.txt:
#   find_package(shelf REQUIRED)          # CMAKE_PREFIX_PATH=/opt/shelf
#   target_link_libraries(app PRIVATE shelf::client)
#   # or: c++ -std=c++20 app.cc $(pkg-config --cflags --libs shelf)
#
# Components: devel (this file), runtime (shelfd and shelf, server/ and
# tools/), python (python/). A plain `cmake --install <build>` installs all
# three; the python one goes to SHELF_PYTHON_SITE, an absolute path that
# --prefix does not move.
include(CMakePackageConfigHelpers)

set(SHELF_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/shelf)

# shelf_client is static, so its private libraries (shm, protocol, base) are
# installed with it, as archives: only <shelf/*.h> is installed as headers, so
# installed users can link them but not include them.
install(TARGETS shelf_client shelf_shm shelf_protocol shelf_base
        EXPORT shelfTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT devel)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/base/include/shelf
                  ${PROJECT_SOURCE_DIR}/libclient/include/shelf
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT devel
        FILES_MATCHING PATTERN "*.h")
install(EXPORT shelfTargets NAMESPACE shelf:: DESTINATION ${SHELF_CMAKE_DIR} COMPONENT devel)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/shelfConfig.cmake.in
  ${PROJECT_BINARY_DIR}/shelfConfig.cmake INSTALL_DESTINATION ${SHELF_CMAKE_DIR})
# 0.x: a minor version may break the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/shelfConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/shelfConfig.cmake ${PROJECT_BINARY_DIR}/shelfConfigVersion.cmake
        DESTINATION ${SHELF_CMAKE_DIR} COMPONENT devel)

# shelf.pc finds its prefix from its own place (${pcfiledir}/<this>).
file(RELATIVE_PATH SHELF_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" SHELF_PC_TO_PREFIX "${SHELF_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/shelf.pc.in ${PROJECT_BINARY_DIR}/shelf.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/shelf.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT devel)
