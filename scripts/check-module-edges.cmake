# The module edges of docs/ARCHITECTURE.md ("may call"), checked on the sources:
#   cmake -DSRC=<the src/ folder> -P scripts/check-module-edges.cmake
# Every `#include "M/..."` of a file in src/<module>/ must name a module (or one header) that
# module may call; any other fails with the file, the include and what the module may call.
# The build runs it before any library (target module_edges). Keep it in step with the table.

# What each module may include: a folder ("core/") or one header ("store/store.h").
set(may_core     "core/")
set(may_proto    "core/;proto/")
set(may_net      "core/;proto/;net/")
set(may_store    "core/;store/")
set(may_sandbox  "core/;sandbox/")
set(may_config   "core/;sandbox/;config/")
set(may_registry "core/;config/;registry/")
set(may_policy   "core/;sandbox/;registry/;policy/")
set(may_admin    "core/;net/;admin/")
# the store only through its interface: no back-end header
set(may_broker   "core/;proto/;net/;sandbox/;config/;registry/;policy/;admin/;store/store.h;broker/")
set(may_client   "core/;proto/;client/")
set(may_tools    "core/;proto/;client/;tools/;store/mysql/schema.h")
# the kiteq.policy Lua module of the busted specs also exposes the config loader
set(may_policy/module "core/;sandbox/;config/;registry/;policy/")
set(modules core proto net store sandbox config registry policy admin broker client tools)

# The generated protobuf types belong to proto/: every other file (the programs in src/ too)
# uses the plain C views of proto/wire.h. Outside src/proto/ no line may name them, the
# generated header, or proto/codec.h (proto's protobuf-level API, which the tests also use).
set(pb_names "Protocol__|protocol__|PROTOCOL__|ProtobufC|protobuf_c|PROTOBUF_C|kite_remoting\\.pb-c\\.h|proto/codec\\.h")

if(NOT SRC)
  message(FATAL_ERROR "usage: cmake -DSRC=<src folder> -P check-module-edges.cmake")
endif()
get_filename_component(SRC "${SRC}" ABSOLUTE)
set(violations "")
file(GLOB_RECURSE files RELATIVE ${SRC} ${SRC}/*.c ${SRC}/*.h)
foreach(f ${files})
  string(REGEX MATCH "^[^/]+" module "${f}")
  if(NOT module STREQUAL "proto")
    file(STRINGS ${SRC}/${f} pb_lines REGEX "${pb_names}")
    foreach(line ${pb_lines})
      string(REGEX MATCH "${pb_names}" pb "${line}")
      list(APPEND violations "${f} names ${pb} (generated protobuf types stay in proto/: use proto/wire.h)")
    endforeach()
  endif()
  if(f MATCHES "^policy/module/")
    set(module "policy/module")
  endif()
  if(NOT DEFINED may_${module}) # src/*.c: the programs (main.c, policy_tool.c) call anything
    continue()
  endif()
  file(STRINGS ${SRC}/${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(line ${lines})
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]*)\".*" "\\1" inc "${line}")
    if(inc MATCHES "\\.\\.")
      list(APPEND violations "${f} includes ${inc} (no ../ across modules: name the module)")
      continue()
    endif()
    string(REGEX MATCH "^[^/]+" target "${inc}")
    list(FIND modules "${target}" known)
    if(known EQUAL -1 OR NOT inc MATCHES "/") # a library header or one next to the file
      continue()
    endif()
    set(allowed FALSE)
    foreach(may ${may_${module}})
      string(LENGTH "${may}" n)
      string(SUBSTRING "${inc}" 0 ${n} head)
      if((may MATCHES "/$" AND head STREQUAL may) OR inc STREQUAL may)
        set(allowed TRUE)
      endif()
    endforeach()
    if(NOT allowed)
      string(REPLACE ";" " " may "${may_${module}}")
      list(APPEND violations "${f} includes ${inc} (${module} may call: ${may})")
    endif()
  endforeach()
endforeach()

if(violations)
  list(JOIN violations "\n  " text)
  message(FATAL_ERROR "module edges broken (docs/ARCHITECTURE.md, \"may call\"):\n  ${text}")
endif()
