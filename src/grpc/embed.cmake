# Writes the bytes of IN (a FileDescriptorSet from protoc-c --descriptor_set_out) into OUT
# as a C array, so the server's reflection answers come from the .proto files themselves
# (src/grpc/reflect.c). Run as: cmake -DIN=... -DOUT=... -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}" "/* Generated from the FileDescriptorSet of proto/ (src/grpc/embed.cmake). */\n"
  "#include <stddef.h>\n"
  "extern const unsigned char kw__grpc_descriptor_set[];\n"
  "extern const size_t kw__grpc_descriptor_set_len;\n"
  "const unsigned char kw__grpc_descriptor_set[] = {\n${body}\n};\n"
  "const size_t kw__grpc_descriptor_set_len = ${len};\n")
