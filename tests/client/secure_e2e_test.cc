// layerctl against a secured layerserve, both as real processes: TLS with
// a client certificate required (--tls_client_ca) and a bearer token
// (--auth_token_file), on throw-away certificates made at test time by
// tests/hardening/make_certs.sh. The right flags work; each missing or
// wrong piece fails with one readable line and exit 3 (or 2 for a command
// line that cannot work); health needs no token; the token never shows.
// Also `layerserve --help`.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/subprocess.h"

namespace layerserve::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kToken[] = "e2e-Tok3n_5f0c9a71";

int Lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

class SecureLayerctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        absl::StrCat(::testing::TempDir(), "layerctl_certs_", getpid()));
    const std::string command =
        absl::StrCat("bash '", LAYERSERVE_MAKE_CERTS, "' '", *dir_, "'");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    std::ofstream(Path("token")) << "\n  " << kToken << "\n";
    std::ofstream(Path("wrong_token")) << kToken << "x\n";
    std::ofstream(Path("empty_token")) << " \n";
    server_ = ServerProcess::Start(LAYERSERVE_BINARY,
                                   {"--tls_cert=" + Path("server.pem"),
                                    "--tls_key=" + Path("server.key"),
                                    "--tls_client_ca=" + Path("ca.pem"),
                                    "--auth_token_file=" + Path("token")})
                  .release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << "layerserve did not exit cleanly";
      EXPECT_THAT(ServerLog(), Not(HasSubstr(kToken)));
    }
    delete server_;
    server_ = nullptr;
    (void)std::system(absl::StrCat("rm -rf '", *dir_, "'").c_str());
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_FALSE(server_->address().empty());
  }

  // The server's stderr so far: its call log.
  static std::string ServerLog() {
    std::ifstream in(server_->log_path());
    std::stringstream log;
    log << in.rdbuf();
    return log.str();
  }

  static std::string Path(const std::string& name) {
    return absl::StrCat(*dir_, "/", name);
  }
  // "localhost:PORT": the name the server's certificate is for.
  static std::string ByName() {
    const std::string& a = server_->address();
    return absl::StrCat("localhost", a.substr(a.rfind(':')));
  }

  // Everything a client needs: the CA, the client certificate, the token.
  static std::vector<std::string> All() {
    return {"--tls_ca",          Path("ca.pem"), "--tls_cert",
            Path("client.pem"),  "--tls_key",    Path("client.key"),
            "--auth_token_file", Path("token")};
  }
  // The TLS flags without the token.
  static std::vector<std::string> Mtls() {
    return {"--tls_ca",         Path("ca.pem"), "--tls_cert",
            Path("client.pem"), "--tls_key",    Path("client.key")};
  }

  // layerctl COMMAND --server localhost:PORT FLAGS... ARGS...
  static RunResult Layerctl(const std::string& command,
                            const std::vector<std::string>& flags,
                            const std::vector<std::string>& args = {}) {
    std::vector<std::string> argv = {LAYERCTL_BINARY, command, "--server",
                                     ByName()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = RunProcess(argv, absl::Seconds(60));
    EXPECT_THAT(r.out + r.err, Not(HasSubstr(kToken)));
    return r;
  }

  static void ExpectOneLineError(const RunResult& r, int code,
                                 const std::vector<std::string>& fragments) {
    EXPECT_EQ(r.exit_code, code) << Describe(r);
    EXPECT_EQ(r.out, "") << Describe(r);
    EXPECT_EQ(Lines(r.err), 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("layerctl ")) << Describe(r);
    for (const std::string& f : fragments) {
      EXPECT_THAT(r.err, HasSubstr(f)) << Describe(r);
    }
  }

  static std::vector<std::string> With(std::vector<std::string> a,
                                       const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  static std::string* dir_;
  static ServerProcess* server_;
};
std::string* SecureLayerctlTest::dir_ = nullptr;
ServerProcess* SecureLayerctlTest::server_ = nullptr;

const std::vector<std::string> kRelu = {"--layer", "relu", "x=randn:2,3"};

TEST_F(SecureLayerctlTest, TheRightFlagsWork) {
  RunResult r = Layerctl("health", All());
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");

  r = Layerctl("forward", All(), kRelu);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\nout: (2, 3) float64 min 0 "));

  r = Layerctl("list", With(All(), {"--json"}));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\"name\":\"spatial_batchnorm\""));

  r = Layerctl("backward", All(), kRelu);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\ndx: (2, 3) float64"));

  r = Layerctl("compare", All(),
               {"--layer", "max_pool", "x=randn:1,2,4,4", "--repeats", "1"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);

  r = Layerctl("bench", All(),
               {"--rpc", "forward", "--requests", "4", "--concurrency", "2",
                "--layer", "relu", "x=randn:8"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("4 requests (4 ok, 0 errors)"));

  // By IP address, checking the certificate for the name it was made for.
  std::vector<std::string> argv = {LAYERCTL_BINARY,     "forward",
                                   "--server",          server_->address(),
                                   "--tls_server_name", "localhost"};
  r = RunProcess(With(With(argv, All()), kRelu), absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST_F(SecureLayerctlTest, HealthNeedsNoToken) {
  RunResult r = Layerctl("health", Mtls());
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(SecureLayerctlTest, WithoutOrWithAWrongTokenIsUnauthenticated) {
  ExpectOneLineError(Layerctl("forward", Mtls(), kRelu), 3,
                     {"layerctl forward: UNAUTHENTICATED: ",
                      "give the server's token with --auth_token_file"});
  ExpectOneLineError(
      Layerctl("list",
               With(Mtls(), {"--auth_token_file", Path("wrong_token")})),
      3, {"layerctl list: UNAUTHENTICATED: ", "(see --auth_token_file)"});
  ExpectOneLineError(
      Layerctl("gradcheck",
               With(Mtls(), {"--auth_token_file", Path("wrong_token")}), kRelu),
      3, {"UNAUTHENTICATED"});
  // The server logs the refusals (never the token: TearDownTestSuite).
  EXPECT_THAT(ServerLog(), HasSubstr("status=UNAUTHENTICATED latency_ms="));
}

TEST_F(SecureLayerctlTest, AnUntrustedServerIsRefused) {
  // The system's CAs did not sign the test server's certificate.
  ExpectOneLineError(
      Layerctl("health", {"--tls", "--tls_cert", Path("client.pem"),
                          "--tls_key", Path("client.key")}),
      3,
      {"layerctl health: UNAVAILABLE: ", "certificate verify failed",
       "give its CA with --tls_ca"});
  // Nor did the rogue CA.
  ExpectOneLineError(
      Layerctl(
          "forward",
          {"--tls_ca", Path("rogue_ca.pem"), "--tls_cert", Path("client.pem"),
           "--tls_key", Path("client.key"), "--auth_token_file", Path("token")},
          kRelu),
      3, {"UNAVAILABLE: ", "not signed by --tls_ca"});
  // A name the certificate is not for.
  ExpectOneLineError(
      Layerctl("health", With(Mtls(), {"--tls_server_name", "other.example"})),
      3, {"UNAVAILABLE: ", "see --tls_server_name"});
}

TEST_F(SecureLayerctlTest, MutualTlsRefusesClientsWithoutTheRightCertificate) {
  ExpectOneLineError(
      Layerctl("health", {"--tls_ca", Path("ca.pem")}), 3,
      {"layerctl health: UNAVAILABLE: ",
       "a server with --tls_client_ca also needs --tls_cert and --tls_key"});
  ExpectOneLineError(
      Layerctl("forward",
               {"--tls_ca", Path("ca.pem"), "--tls_cert",
                Path("rogue_client.pem"), "--tls_key", Path("rogue_client.key"),
                "--auth_token_file", Path("token")},
               kRelu),
      3, {"UNAVAILABLE: ", "from a CA it trusts"});
  // Plaintext to a TLS server.
  ExpectOneLineError(Layerctl("health", {}), 3,
                     {"UNAVAILABLE: ", "a TLS server needs --tls or --tls_ca"});
  // And the server still serves the right client.
  EXPECT_EQ(Layerctl("health", All()).exit_code, 0);
}

TEST_F(SecureLayerctlTest, FlagsThatCannotWorkAreUsageErrors) {
  ExpectOneLineError(Layerctl("health", {"--tls_ca", Path("ca.pem"),
                                         "--tls_cert", Path("client.pem")}),
                     2,
                     {"layerctl health: --tls_cert and --tls_key: give both",
                      "got only --tls_cert"});
  ExpectOneLineError(
      Layerctl("forward",
               {"--tls_ca", Path("ca.pem"), "--tls_key", Path("client.key")},
               kRelu),
      2, {"got only --tls_key"});
  ExpectOneLineError(Layerctl("list", {"--tls_ca", Path("nope.pem")}), 2,
                     {"--tls_ca: cannot read '" + Path("nope.pem") + "'"});
  ExpectOneLineError(
      Layerctl("list", With(Mtls(), {"--auth_token_file", Path("nope")})), 2,
      {"--auth_token_file: cannot read '" + Path("nope") + "'"});
  ExpectOneLineError(
      Layerctl("list",
               With(Mtls(), {"--auth_token_file", Path("empty_token")})),
      2, {"--auth_token_file: '" + Path("empty_token") + "' is empty"});
  ExpectOneLineError(Layerctl("notebook", {"--tls_cert", Path("client.pem")}),
                     2, {"layerctl notebook: --tls_cert and --tls_key"});
}

TEST(LayerctlHelpTest, EveryCommandDocumentsTheConnectionFlags) {
  for (const char* cmd : {"health", "list", "forward", "backward", "gradcheck",
                          "compare", "notebook", "bench"}) {
    RunResult r = RunProcess({LAYERCTL_BINARY, cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    for (const char* flag :
         {"\nconnection flags (every command):\n", "\n  --tls ",
          "\n  --tls_ca=FILE ", "\n  --tls_cert=FILE ", "\n  --tls_key=FILE ",
          "\n  --tls_server_name=NAME ", "\n  --auth_token_file=FILE ",
          "\nsecure connections (the same flags for every command):\n"
          "  layerctl health --server localhost:50051 --tls_ca ca.pem"}) {
      EXPECT_THAT(r.out, HasSubstr(flag)) << cmd;
    }
  }
  RunResult r = RunProcess({LAYERCTL_BINARY, "--help"});
  EXPECT_THAT(r.out, HasSubstr("--auth_token_file FILE"));
}

TEST(LayerserveHelpTest, ListsTheServersFlagsAndExitsZero) {
  for (const char* help : {"--help", "-h"}) {
    RunResult r = RunProcess({LAYERSERVE_BINARY, help}, absl::Seconds(60));
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_THAT(r.out, StartsWith("usage: layerserve [flags]\n"));
    EXPECT_THAT(r.out, Not(HasSubstr("No flags matched")));
    for (const char* flag :
         {"\n  --address (default: \"127.0.0.1:50051\")\n",
          "\n  --max_tensor_elements (default: ", "\n  --tls_cert ",
          "\n  --tls_key ", "\n  --tls_client_ca ", "\n  --auth_token_file ",
          "\nexamples:\n  layerserve --address 127.0.0.1:50051\n"}) {
      EXPECT_THAT(r.out, HasSubstr(flag)) << help;
    }
  }
}

}  // namespace
}  // namespace layerserve::testing
