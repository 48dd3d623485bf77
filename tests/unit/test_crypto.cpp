#include "retentiond/crypto.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace retentiond {
namespace {

TEST(Sha256, KnownVectors) {
    // FIPS 180-2 examples.
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, BinaryDataWithNulBytes) {
    const std::string with_nul("a\0b", 3);
    EXPECT_NE(sha256_hex(with_nul), sha256_hex("a"));
    EXPECT_EQ(sha256_hex(with_nul).size(), 64U);
}

TEST(HmacSha256, Rfc4231TestCases) {
    // Test case 2: key "Jefe".
    EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    // Test case 1: key = 20 bytes of 0x0b, data "Hi There".
    EXPECT_EQ(hmac_sha256_hex(std::string(20, '\x0b'), "Hi There"),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    // Test case 6: a key longer than the block size is hashed first.
    EXPECT_EQ(hmac_sha256_hex(std::string(131, '\xaa'),
                              "Test Using Larger Than Block-Size Key - Hash Key First"),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(HmacSha256, AppendedInTwoPartsIsTheDigestOfTheirConcatenation) {
    std::string out = "x";
    append_hmac_sha256_hex("Jefe", "what do ya want ", "for nothing?", out);
    EXPECT_EQ(out, "x" + hmac_sha256_hex("Jefe", "what do ya want for nothing?"));
    out.clear();
    append_hmac_sha256_hex("k", "", "", out);
    EXPECT_EQ(out, hmac_sha256_hex("k", ""));
}

TEST(HmacSha256, EmptyKeyAndData) {
    EXPECT_EQ(hmac_sha256_hex("", ""),
              "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    EXPECT_NE(hmac_sha256_hex("k1", "value"), hmac_sha256_hex("k2", "value"));
}

TEST(RandomHex, LengthAlphabetAndUniqueness) {
    EXPECT_EQ(random_hex(0), "");
    const std::string r = random_hex(16);
    EXPECT_EQ(r.size(), 32U);
    EXPECT_EQ(r.find_first_not_of("0123456789abcdef"), std::string::npos);
    std::set<std::string> seen;
    for (int i = 0; i < 100; ++i) {
        seen.insert(random_hex(8));
    }
    EXPECT_EQ(seen.size(), 100U);
}

} // namespace
} // namespace retentiond
