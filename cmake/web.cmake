# The web dashboard (docs/dashboard.md): web/build.sh (npm ci + esbuild) writes the static
# files into <build>/ui, cmake/embed-ui.cmake compiles them into vmsnapd as ui-files.c.
# VMSNAP_WEB: AUTO builds the dashboard when node and npm are found, ON requires them, OFF
# embeds an empty table (the dashboard paths then answer 404 saying why). On CI (environment
# CI=true) AUTO means ON: a CI build without the dashboard must fail, not pass quietly.
set(VMSNAP_WEB AUTO CACHE STRING "Build the web dashboard into vmsnapd: AUTO, ON or OFF")
set_property(CACHE VMSNAP_WEB PROPERTY STRINGS AUTO ON OFF)
find_program(VMSNAP_NODE node)
find_program(VMSNAP_NPM npm)
set(web_want ${VMSNAP_WEB})
if(web_want STREQUAL "AUTO" AND "$ENV{CI}" STREQUAL "true")
  set(web_want ON)
endif()
set(web_on OFF)
if(web_want STREQUAL "ON" OR (web_want STREQUAL "AUTO" AND VMSNAP_NODE AND VMSNAP_NPM))
  if(NOT VMSNAP_NODE OR NOT VMSNAP_NPM)
    message(FATAL_ERROR "VMSNAP_WEB=${VMSNAP_WEB} (CI=$ENV{CI}) needs node and npm "
                        "(scripts/setup.sh installs them)")
  endif()
  set(web_on ON)
endif()
set(ui_dir ${CMAKE_BINARY_DIR}/ui)
if(web_on)
  message(STATUS "web dashboard: built into vmsnapd (web/build.sh)")
  file(GLOB_RECURSE web_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/web/src/*)
  set(ui_outputs ${ui_dir}/index.html ${ui_dir}/app.js ${ui_dir}/app.css ${ui_dir}/icon.svg)
  add_custom_command(
    OUTPUT ${ui_outputs}
    COMMAND bash ${CMAKE_SOURCE_DIR}/web/build.sh ${ui_dir}
    DEPENDS ${web_sources} ${CMAKE_SOURCE_DIR}/web/build.sh ${CMAKE_SOURCE_DIR}/web/build.mjs
            ${CMAKE_SOURCE_DIR}/scripts/npm-ci.sh
            ${CMAKE_SOURCE_DIR}/web/index.html ${CMAKE_SOURCE_DIR}/web/style.css
            ${CMAKE_SOURCE_DIR}/web/icon.svg ${CMAKE_SOURCE_DIR}/web/package-lock.json
    COMMENT "Building the web dashboard (web/build.sh)"
    VERBATIM)
  set(embed_dir ${ui_dir})
else()
  message(STATUS "web dashboard: not built (VMSNAP_WEB=${VMSNAP_WEB}, node ${VMSNAP_NODE}, npm ${VMSNAP_NPM})")
  set(ui_outputs "")
  set(embed_dir "")
endif()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/ui-files.c
  COMMAND ${CMAKE_COMMAND} -DUI_DIR=${embed_dir} -DOUT=${CMAKE_BINARY_DIR}/ui-files.c
          -P ${CMAKE_SOURCE_DIR}/cmake/embed-ui.cmake
  DEPENDS ${ui_outputs} ${CMAKE_SOURCE_DIR}/cmake/embed-ui.cmake
  COMMENT "Embedding the web dashboard into vmsnapd"
  VERBATIM)
