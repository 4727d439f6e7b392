// SHA-256 on OpenSSL's libcrypto: EVP_DigestInit/Update/Final with EVP_sha256().
#include "kvsteer/model/sha256.h"

#include <openssl/evp.h>

#include <new>
#include <stdexcept>

namespace kvsteer::model {
namespace {

void check(int ok, const char *what) {
    if (ok != 1) throw std::runtime_error(std::string("SHA-256: ") + what + " failed");
}

std::string to_hex(const std::array<uint8_t, 32> &d) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(2 * d.size());
    for (uint8_t b : d) {
        s.push_back(digits[b >> 4]);
        s.push_back(digits[b & 15]);
    }
    return s;
}

}  // namespace

void Sha256::Free::operator()(evp_md_ctx_st *c) const {
    EVP_MD_CTX_free(c);
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_) throw std::bad_alloc();
    check(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256 &&) noexcept = default;
Sha256 &Sha256::operator=(Sha256 &&) noexcept = default;

void Sha256::update(std::string_view data) {
    check(EVP_DigestUpdate(ctx_.get(), data.data(), data.size()), "EVP_DigestUpdate");
}

std::array<uint8_t, 32> Sha256::finish() {
    std::array<uint8_t, 32> out;
    unsigned int n = 0;
    check(EVP_DigestFinal_ex(ctx_.get(), out.data(), &n), "EVP_DigestFinal_ex");
    if (n != out.size()) throw std::runtime_error("SHA-256: unexpected digest length");
    check(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
    return out;
}

std::string Sha256::hex() {
    return to_hex(finish());
}

std::string sha256_hex(std::string_view data) {
    std::array<uint8_t, 32> d;
    unsigned int n = 0;
    if (EVP_Digest(data.data(), data.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 ||
        n != d.size())
        throw std::runtime_error("SHA-256: EVP_Digest failed");
    return to_hex(d);
}

}  // namespace kvsteer::model
