# add_served_files(<output .cpp> <symbol> <source> <path> [<source> <path> ...])
#
# Generates, at build time, a C++ source that embeds each source file (a
# path relative to the project root) with the path it is served at, its
# Content-Type and a strong ETag, as `const served_file_table <symbol>`
# (http/served_files.hpp). Add the output to a target's sources. Nothing is
# read at run time; a changed file regenerates the source.
function(add_served_files output symbol)
  set(entries ${ARGN})
  list(LENGTH entries n)
  math(EXPR odd "${n} % 2")
  if(n EQUAL 0 OR odd)
    message(FATAL_ERROR "add_served_files: give pairs of <source> <path>")
  endif()
  set(sources "")
  set(pairs "")
  math(EXPR last "${n} - 1")
  foreach(i RANGE 0 ${last} 2)
    math(EXPR j "${i} + 1")
    list(GET entries ${i} source)
    list(GET entries ${j} path)
    set(source ${PROJECT_SOURCE_DIR}/${source})
    list(APPEND sources ${source})
    list(APPEND pairs "${source}|${path}")
  endforeach()
  list(JOIN pairs "|" joined)
  set(script ${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} "-DFILES=${joined}" -DOUTPUT=${output}
            -DSYMBOL=${symbol} -P ${script}
    DEPENDS ${sources} ${script}
    COMMENT "Embedding the files of ${symbol}"
    VERBATIM)
endfunction()
