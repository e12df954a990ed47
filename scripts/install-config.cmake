# Run by `cmake --install` (install(SCRIPT) in CMakeLists.txt): writes etc/kiteq/cluster.lua
# and the systemd unit for the prefix being installed to, so that the installed service runs
# the installed policies without a hand edit. From lua/config/cluster.lua:
#   - `policies` names <prefix>/share/kiteq/policies,
#   - the sample groups and their secrets are commented out (the operator adds real ones).
# KQ_SOURCE_DIR and KQ_BINARY_DIR are set by the install(CODE) line before this script.
set(policies "${CMAKE_INSTALL_PREFIX}/share/kiteq/policies")
set(out "${KQ_BINARY_DIR}/install-generated")
file(MAKE_DIRECTORY "${out}")

file(READ "${KQ_SOURCE_DIR}/lua/config/cluster.lua" cfg)
set(sample_policies "policies = \"lua/policies\",")
string(FIND "${cfg}" "${sample_policies}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "lua/config/cluster.lua: no line `${sample_policies}` to point at ${policies}")
endif()
string(REPLACE "${sample_policies}" "policies = \"${policies}\"," cfg "${cfg}")
# group entries: `["s-trade-a"] = "secret-a",` -> `-- ["s-trade-a"] = "secret-a",`
string(REGEX REPLACE "\n( *)(\\[\"[^\"]*\"\\] = \"[^\"]*\",)" "\n\\1-- \\2" cfg "${cfg}")
string(REGEX MATCH "\n *\\[\"[^\"]*\"\\] = \"" left "${cfg}")
if(left)
  message(FATAL_ERROR "lua/config/cluster.lua: a sample secret was left uncommented")
endif()
file(WRITE "${out}/cluster.lua" "${cfg}")
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/etc/kiteq" TYPE FILE FILES "${out}/cluster.lua")

file(READ "${KQ_SOURCE_DIR}/scripts/kiteq.service" unit)
string(REPLACE "/usr/local/" "${CMAKE_INSTALL_PREFIX}/" unit "${unit}")
file(WRITE "${out}/kiteq.service" "${unit}")
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE
     FILES "${out}/kiteq.service")

# libkiteq-client.pc for the prefix: `pkg-config --cflags --libs kiteq-client`
# (headers under include/kiteq/: #include <kiteq/kiteq_client.h>)
file(WRITE "${out}/kiteq-client.pc"
"prefix=${CMAKE_INSTALL_PREFIX}
libdir=\${prefix}/${KQ_LIBDIR}
includedir=\${prefix}/${KQ_INCLUDEDIR}

Name: kiteq-client
Description: C client library for KiteQ brokers (original wire protocol, ZooKeeper discovery)
Version: ${KQ_VERSION}
Libs: -L\${libdir} -lkiteq-client
Cflags: -I\${includedir}
")
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/${KQ_LIBDIR}/pkgconfig" TYPE FILE
     FILES "${out}/kiteq-client.pc")
