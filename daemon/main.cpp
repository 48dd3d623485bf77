#include "retentiond/cli.hpp"

#include <iostream>

int main(int argc, char** argv) {
    return retentiond::run_cli(argc, argv, std::cout, std::cerr);
}
