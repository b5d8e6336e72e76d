// Security against the real server process: TLS (--tls_cert, --tls_key),
// mutual TLS (--tls_client_ca) and bearer tokens (--auth_token_file), with
// throw-away certificates made by openssl at test time (make_certs.sh).
// Shows that each works, and that each refuses who it should: a plaintext
// client of a TLS server, a client that does not trust the server's CA, a
// client without the right certificate under mTLS, a call without the
// right token. Health stays open for probes. The default bind is loopback.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/hardening/hardening_util.h"

namespace layerserve::testing {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        absl::StrCat(::testing::TempDir(), "layerserve_certs_", getpid()));
    const std::string command =
        absl::StrCat("bash '", LAYERSERVE_MAKE_CERTS, "' '", *dir_, "'");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    std::ofstream(Path("token")) << "  s3cret-Token_0123456789\n";
    std::ofstream(Path("empty_token")) << "\n";
  }
  static void TearDownTestSuite() {
    const std::string command = absl::StrCat("rm -rf '", *dir_, "'");
    (void)std::system(command.c_str());
    delete dir_;
  }
  static std::string Path(const std::string& name) {
    return absl::StrCat(*dir_, "/", name);
  }

  // Starts a server with `flags`; fails the test if it does not come up.
  void Start(const std::vector<std::string>& flags) {
    server_ = StartServer(flags, &port_);
    ASSERT_GT(port_, 0);
    // The startup line comes right after "listening on".
    for (int i = 0;
         i < 1000 && server_->Stderr().find("serving on") == std::string::npos;
         ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  // The seed conv through a client with these options (the target and a
  // short timeout filled in): OK, or why not.
  absl::Status SeedConv(client::ClientOptions o) {
    const bool default_target = o.target == client::ClientOptions().target;
    o.target =
        absl::StrCat(default_target ? "127.0.0.1" : o.target, ":", port_);
    o.timeout = absl::Seconds(20);
    absl::StatusOr<std::unique_ptr<client::LayerClient>> c =
        client::LayerClient::Connect(o);
    if (!c.ok()) return c.status();
    absl::StatusOr<v1::ForwardResponse> r =
        (*c)->Forward(SeedConvForwardRequest());
    if (!r.ok()) return r.status();
    const double err = ValueOrDie(
        RelError(TensorOf(r->outputs().at("out")), SeedConvCorrect()));
    if (err > kF64VectorTol) return absl::InternalError("wrong output");
    return absl::OkStatus();
  }

  static client::ClientOptions Tls(std::string ca) {
    client::ClientOptions o;
    o.tls_ca = std::move(ca);
    return o;
  }

  static std::string* dir_;
  std::unique_ptr<ServerProcess> server_;
  int port_ = 0;
};
std::string* SecurityTest::dir_ = nullptr;

TEST_F(SecurityTest, TlsServesTlsClientsAndRefusesOthers) {
  Start(
      {"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key")});
  EXPECT_THAT(server_->Stderr(), HasSubstr("(TLS;"));
  // The CA as a path, as PEM text, and by host name (the SAN's DNS entry).
  EXPECT_TRUE(SeedConv(Tls(Path("ca.pem"))).ok());
  EXPECT_TRUE(SeedConv(Tls(ReadFile(Path("ca.pem")))).ok());
  client::ClientOptions by_name = Tls(Path("ca.pem"));
  by_name.target = "localhost";
  EXPECT_TRUE(SeedConv(by_name).ok());

  // Plaintext to a TLS server: no connection.
  EXPECT_EQ(SeedConv({}).code(), absl::StatusCode::kUnavailable);
  // A client that does not trust the server's CA refuses the server.
  EXPECT_EQ(SeedConv(Tls(Path("rogue_ca.pem"))).code(),
            absl::StatusCode::kUnavailable);
  // Nor does a certificate for another name pass.
  client::ClientOptions wrong_name = Tls(Path("ca.pem"));
  wrong_name.tls_server_name = "not-the-server.example";
  EXPECT_EQ(SeedConv(wrong_name).code(), absl::StatusCode::kUnavailable);
  // Health over TLS.
  client::ClientOptions o = Tls(Path("ca.pem"));
  o.target = absl::StrCat("127.0.0.1:", port_);
  EXPECT_EQ(
      ValueOrDie(client::LayerClient::Connect(o))->Health().value_or("error"),
      "SERVING");
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  Start({"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key"),
         "--tls_client_ca=" + Path("ca.pem")});
  EXPECT_THAT(server_->Stderr(), HasSubstr("(mutual TLS;"));
  client::ClientOptions with_cert = Tls(Path("ca.pem"));
  with_cert.tls_cert = Path("client.pem");
  with_cert.tls_key = Path("client.key");
  EXPECT_TRUE(SeedConv(with_cert).ok());

  // No client certificate.
  EXPECT_EQ(SeedConv(Tls(Path("ca.pem"))).code(),
            absl::StatusCode::kUnavailable);
  // A certificate from a CA the server does not trust.
  client::ClientOptions rogue = Tls(Path("ca.pem"));
  rogue.tls_cert = Path("rogue_client.pem");
  rogue.tls_key = Path("rogue_client.key");
  EXPECT_EQ(SeedConv(rogue).code(), absl::StatusCode::kUnavailable);
  // Plaintext.
  EXPECT_EQ(SeedConv({}).code(), absl::StatusCode::kUnavailable);
  // And the server is fine afterwards.
  EXPECT_TRUE(SeedConv(with_cert).ok());
}

TEST_F(SecurityTest, BearerTokenRequiredForTheServiceNotForHealth) {
  Start({"--auth_token_file=" + Path("token")});
  client::ClientOptions right;
  right.auth_token = "s3cret-Token_0123456789";  // the file's, trimmed
  EXPECT_TRUE(SeedConv(right).ok());

  for (const std::string& wrong :
       {std::string(""), std::string("s3cret-Token_012345678"),
        std::string("s3cret-Token_01234567890"),
        std::string("S3cret-Token_0123456789")}) {
    client::ClientOptions o;
    o.auth_token = wrong;
    const absl::Status status = SeedConv(o);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated)
        << "token '" << wrong << "': " << status;
  }

  client::ClientOptions none;
  none.target = absl::StrCat("127.0.0.1:", port_);
  std::unique_ptr<client::LayerClient> anonymous =
      ValueOrDie(client::LayerClient::Connect(none));
  // Every LayerService method is closed...
  EXPECT_EQ(anonymous->ListLayers().status().code(),
            absl::StatusCode::kUnauthenticated);
  v1::GradCheckRequest gc;
  EXPECT_EQ(anonymous->GradCheck(gc).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(
      std::string(anonymous->Compare({}).status().message()),
      HasSubstr("this server requires a bearer token: send the metadata "
                "'authorization: Bearer <token>'"));
  // ...and health stays open for probes.
  EXPECT_EQ(anonymous->Health().value_or("error"), "SERVING");

  // Another scheme with the right secret is not a bearer token.
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Basic s3cret-Token_0123456789");
  v1::ListLayersResponse response;
  EXPECT_EQ(v1::LayerService::NewStub(anonymous->channel())
                ->ListLayers(&context, {}, &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The token never appears in the log.
  EXPECT_THAT(server_->Stderr(), ::testing::Not(HasSubstr("s3cret")));
  EXPECT_THAT(server_->Stderr(), HasSubstr("status=UNAUTHENTICATED"));
}

TEST_F(SecurityTest, TokenAndMutualTlsTogether) {
  Start({"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key"),
         "--tls_client_ca=" + Path("ca.pem"),
         "--auth_token_file=" + Path("token")});
  client::ClientOptions o = Tls(Path("ca.pem"));
  o.tls_cert = Path("client.pem");
  o.tls_key = Path("client.key");
  EXPECT_EQ(SeedConv(o).code(), absl::StatusCode::kUnauthenticated);
  o.auth_token = "s3cret-Token_0123456789";
  EXPECT_TRUE(SeedConv(o).ok());
}

// Flags that cannot work: the server says which and exits non-zero.
struct BadFlags {
  std::string label;
  std::vector<std::string> flags;  // $DIR: the certificates' folder
  std::string message;
  friend void PrintTo(const BadFlags& b, std::ostream* os) { *os << b.label; }
};

class SecurityFlagsTest : public SecurityTest,
                          public ::testing::WithParamInterface<BadFlags> {};

TEST_P(SecurityFlagsTest, BadSecurityFlagsExitNonZero) {
  std::vector<std::string> flags = {"--address=127.0.0.1:0"};
  for (const std::string& f : GetParam().flags) {
    flags.push_back(absl::StrReplaceAll(f, {{"$DIR", *dir_}}));
  }
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(LAYERSERVE_BINARY, flags);
  ASSERT_NE(server, nullptr);
  const std::optional<int> code = server->WaitExit(absl::Seconds(60));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(server->Stderr(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, SecurityFlagsTest,
    ::testing::Values(
        BadFlags{"CertWithoutKey",
                 {"--tls_cert=$DIR/server.pem"},
                 "--tls_cert and --tls_key: give both (TLS) or neither"},
        BadFlags{"ClientCaWithoutTls",
                 {"--tls_client_ca=$DIR/ca.pem"},
                 "--tls_client_ca: mutual TLS needs TLS"},
        BadFlags{"CertUnreadable",
                 {"--tls_cert=$DIR/nope.pem", "--tls_key=$DIR/server.key"},
                 "--tls_cert: cannot read"},
        BadFlags{"TokenFileMissing",
                 {"--auth_token_file=$DIR/missing"},
                 "--auth_token_file: cannot read"},
        BadFlags{"TokenFileEmpty",
                 {"--auth_token_file=$DIR/empty_token"},
                 "is empty"}),
    [](const auto& info) { return info.param.label; });

TEST(DefaultBindTest, IsLoopback) {
  EXPECT_EQ(server::ServerOptions().address, "127.0.0.1:50051");
  // And the binary's flag default says the same.
  std::unique_ptr<ServerProcess> help =
      ServerProcess::Start(LAYERSERVE_BINARY, {"--helpfull"});
  ASSERT_NE(help, nullptr);
  const std::string text = help->ReadAll(absl::Seconds(60));
  help->WaitExit(absl::Seconds(30));
  EXPECT_THAT(text, HasSubstr("default: \"127.0.0.1:50051\""));
}

}  // namespace
}  // namespace layerserve::testing
