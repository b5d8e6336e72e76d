# layerctl (the command-line client), its .npy and tensor-spec helpers, and
# the Python client's generated stubs. Included from client/CMakeLists.txt.

# .npy I/O and `name=spec` input generators: no gRPC, so unit tests link
# them without a server.
add_library(layerserve_cli_io STATIC npy.cc generators.cc)
target_link_libraries(layerserve_cli_io PUBLIC layerserve_lib absl::status
                      absl::statusor absl::strings)

# The CLI's pieces, as a library so that tests can call them directly.
if(TARGET layerserve_client)
  add_library(layerserve_cli STATIC
    cli_flags.cc cli_output.cc cli_common.cc cli_commands.cc notebook.cc
    bench.cc)
  target_link_libraries(layerserve_cli PUBLIC layerserve_cli_io
    layerserve_client layerserve_proto_convert absl::strings
    absl::str_format absl::synchronization absl::time Threads::Threads)

  add_executable(layerctl layerctl_main.cc)
  target_link_libraries(layerctl PRIVATE layerserve_cli)
endif()

# The Python client: stubs generated from the same .proto by protoc and
# Debian's grpc_python_plugin, next to copies of client/python/*.py, in
# <build>/client/python (the directory to put on PYTHONPATH).
find_program(LAYERSERVE_GRPC_PYTHON_PLUGIN grpc_python_plugin
  PATHS /usr/bin NO_DEFAULT_PATH)
if(LAYERSERVE_GRPC_PYTHON_PLUGIN)
  set(py_out ${CMAKE_CURRENT_BINARY_DIR}/python)
  set(py_proto ${PROJECT_SOURCE_DIR}/proto/layerserve/v1/layer_service.proto)
  set(py_stubs ${py_out}/layerserve/v1/layer_service_pb2.py
               ${py_out}/layerserve/v1/layer_service_pb2_grpc.py)
  add_custom_command(
    OUTPUT ${py_stubs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${py_out}
    COMMAND protobuf::protoc -I ${PROJECT_SOURCE_DIR}/proto
            --python_out=${py_out} --grpc_python_out=${py_out}
            --plugin=protoc-gen-grpc_python=${LAYERSERVE_GRPC_PYTHON_PLUGIN}
            ${py_proto}
    DEPENDS ${py_proto} protobuf::protoc
    COMMENT "Generating Python stubs for layerserve/v1/layer_service.proto"
    VERBATIM)
  set(py_copies)
  foreach(f layerserve_client.py seed_conv_forward.py)
    add_custom_command(
      OUTPUT ${py_out}/${f}
      COMMAND ${CMAKE_COMMAND} -E copy_if_different
              ${CMAKE_CURRENT_SOURCE_DIR}/python/${f} ${py_out}/${f}
      DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/${f}
      VERBATIM)
    list(APPEND py_copies ${py_out}/${f})
  endforeach()
  add_custom_target(layerserve_python ALL DEPENDS ${py_stubs} ${py_copies})
  set(LAYERSERVE_PYTHON_DIR ${py_out} PARENT_SCOPE)
endif()
