// SHA-256, incremental, on OpenSSL's libcrypto (EVP). Used to prove request and response bodies
// cross the load balancer byte-identical (`sha256sum` in shell tests computes the same digest).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace kvsteer::model {

class Sha256 {
   public:
    Sha256();
    ~Sha256();
    Sha256(Sha256 &&) noexcept;
    Sha256 &operator=(Sha256 &&) noexcept;
    Sha256(const Sha256 &) = delete;
    Sha256 &operator=(const Sha256 &) = delete;

    void update(std::string_view data);
    std::array<uint8_t, 32> finish();  // the digest; the object is then ready for a new message
    std::string hex();                 // finish() as 64 lowercase hex digits

   private:
    struct Free {
        void operator()(evp_md_ctx_st *c) const;
    };
    std::unique_ptr<evp_md_ctx_st, Free> ctx_;
};

std::string sha256_hex(std::string_view data);

}  // namespace kvsteer::model
