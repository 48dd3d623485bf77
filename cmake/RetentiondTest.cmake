# retentiond_add_test(NAME SOURCE [LIBS ...] [INCLUDES ...]): one GoogleTest executable and one
# ctest entry per file (not per TEST), so a suite starts its PostgreSQL cluster or Redis server once.
function(retentiond_add_test name src)
  cmake_parse_arguments(ARG "" "" "LIBS;INCLUDES" ${ARGN})
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE retentiond_testsupport GTest::gtest_main retentiond_warnings
                        ${ARG_LIBS})
  target_include_directories(${name} PRIVATE ${ARG_INCLUDES})
  add_dependencies(${name} retentiond)
  add_test(NAME ${name} COMMAND ${name} --gtest_color=no)
  set_tests_properties(${name} PROPERTIES TIMEOUT 600)
endfunction()

# retentiond_engine_tests(KIND [LIBS ...]): every tests/test_*.cpp of an engine folder as its own
# suite, and tests/contract_KIND.cpp added to the one contract suite (tests/contract).
function(retentiond_engine_tests kind)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  if(NOT RETENTIOND_TESTS)
    return()
  endif()
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/test_*.cpp)
  foreach(src ${tests})
    get_filename_component(name ${src} NAME_WE)
    retentiond_add_test(${name} ${src} LIBS retentiond_engine_${kind} ${ARG_LIBS}
                        INCLUDES ${CMAKE_CURRENT_SOURCE_DIR})
  endforeach()
  set_property(GLOBAL APPEND PROPERTY RETENTIOND_CONTRACT_ADAPTERS
               ${CMAKE_CURRENT_SOURCE_DIR}/tests/contract_${kind}.cpp)
  set_property(GLOBAL APPEND PROPERTY RETENTIOND_CONTRACT_LIBS retentiond_engine_${kind} ${ARG_LIBS})
  set_property(GLOBAL APPEND PROPERTY RETENTIOND_CONTRACT_KINDS ${kind})
endfunction()
