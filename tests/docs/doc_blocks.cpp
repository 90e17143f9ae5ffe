// Extracts the C++ blocks of Markdown files into translation units, so that a documented example
// that drifts from the API fails the build.
//
// Usage: gpusafe_doc_blocks OUT_DIR FILE.md...   writes OUT_DIR/<stem>.cpp per Markdown file.
//
// Each ```cpp block compiles as written (includes, declarations, a main), in a namespace of its
// own (gpusafe_doc_<n>) so that blocks of one page may reuse names; the #include lines of every
// block go first. What a reader need not see goes in an HTML comment right before the fence,
// which Markdown does not render:
//
//   <!-- doc-test: function requires=torch
//   struct Net : torch::nn::Module {};      (declarations the block uses)
//   -->
//
// `function` puts the block's lines other than #include into a function body (for snippets of
// statements); `global` leaves the block out of its namespace (gtest's registration macros need
// their own); `requires=cuda|torch|cublas|...|gtest` compiles the block only where the build
// has that.
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Block {
  std::string source;  // the Markdown file
  int first_line = 0;  // of the block's first code line in it
  std::vector<std::string> code;
  std::vector<std::string> prelude;
  bool in_function = false;
  bool global = false;
  std::string requires_what;
};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool is_cpp_fence(const std::string& line) { return line == "```cpp" || line == "```c++"; }

/// Reads the options line of a doc-test comment ("function requires=torch").
void read_options(const std::string& options, Block& b) {
  std::istringstream words(options);
  for (std::string w; words >> w;) {
    if (w == "function") b.in_function = true;
    if (w == "global") b.global = true;
    if (starts_with(w, "requires=")) b.requires_what = w.substr(9);
  }
}

std::vector<Block> read_blocks(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::vector<Block> blocks;
  Block pending;  // options and prelude of a doc-test comment waiting for its fence
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (starts_with(lines[i], "<!-- doc-test:")) {
      pending = Block{};
      read_options(lines[i].substr(14), pending);
      while (++i < lines.size() && !starts_with(lines[i], "-->"))
        pending.prelude.push_back(lines[i]);
      continue;
    }
    if (!is_cpp_fence(lines[i])) {
      if (!lines[i].empty()) pending = Block{};  // a comment applies to the very next block only
      continue;
    }
    Block b = pending;
    pending = Block{};
    b.source = path;
    b.first_line = static_cast<int>(i) + 2;
    while (++i < lines.size() && !starts_with(lines[i], "```")) b.code.push_back(lines[i]);
    blocks.push_back(b);
  }
  return blocks;
}

/// The preprocessor condition of requires=WHAT: gtest's header, or GPUSAFE_WITH_<WHAT> (cuda,
/// torch, cublas, cudnn, cufft, nccl).
std::string guard_for(const std::string& what) {
  if (what.empty()) return "";
  if (what == "gtest") return "__has_include(<gtest/gtest.h>)";
  std::string macro = "GPUSAFE_WITH_";
  for (char c : what) macro += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return "defined(" + macro + ") && " + macro;
}

void write_line(std::ostream& out, const Block& b, std::size_t k) {
  out << "#line " << b.first_line + static_cast<int>(k) << " \"" << b.source << "\"\n"
      << b.code[k] << "\n";
}

/// One block after the page's includes: in its own namespace, the prelude, then its lines other
/// than #include (in a function body when asked), with #line directives into the Markdown file.
void write_block(const Block& b, std::size_t n, std::ostream& out) {
  const std::string guard = guard_for(b.requires_what);
  if (!guard.empty()) out << "#if " << guard << "\n";
  if (!b.global) out << "namespace gpusafe_doc_" << n << " {\n";
  for (const auto& l : b.prelude)
    if (!starts_with(l, "#include")) out << l << "\n";
  if (b.in_function) out << "[[maybe_unused]] void block() {\n";
  for (std::size_t k = 0; k < b.code.size(); ++k)
    if (!starts_with(b.code[k], "#include")) write_line(out, b, k);
  if (b.in_function) out << "}\n";
  if (!b.global) out << "}  // namespace gpusafe_doc_" << n << "\n";
  if (!guard.empty()) out << "#endif\n";
}

/// A page's blocks as one translation unit: every block's #include lines, its prelude's among
/// them, first (each under its block's condition), then the blocks.
void write_unit(const std::string& source, const std::vector<Block>& blocks, std::ostream& out) {
  out << "// Generated from " << source << "; edit the Markdown, not this file.\n";
  out << "#include \"gpusafe/config.hpp\"\n";
  for (const Block& b : blocks) {
    const std::string guard = guard_for(b.requires_what);
    if (!guard.empty()) out << "#if " << guard << "\n";
    for (const auto& l : b.prelude)
      if (starts_with(l, "#include")) out << l << "\n";
    for (std::size_t k = 0; k < b.code.size(); ++k)
      if (starts_with(b.code[k], "#include")) write_line(out, b, k);
    if (!guard.empty()) out << "#endif\n";
  }
  for (std::size_t n = 0; n < blocks.size(); ++n) write_block(blocks[n], n + 1, out);
}

std::string stem_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  return name.substr(0, name.find('.'));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " OUT_DIR FILE.md...\n";
    return 2;
  }
  const std::string out_dir = argv[1];
  for (int a = 2; a < argc; ++a) {
    const std::string out_path = out_dir + "/" + stem_of(argv[a]) + ".cpp";
    std::ofstream out(out_path);
    write_unit(argv[a], read_blocks(argv[a]), out);
    if (!out) {
      std::cerr << "cannot write " << out_path << "\n";
      return 1;
    }
  }
  return 0;
}
