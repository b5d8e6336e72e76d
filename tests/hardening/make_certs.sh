#!/usr/bin/env bash
# Makes a throw-away PKI for the TLS tests in DIR (created if needed):
#   ca.pem, ca.key            a test CA
#   server.pem, server.key    signed by it, for localhost and 127.0.0.1
#   client.pem, client.key    signed by it, a client certificate
#   rogue_ca.pem              another CA nobody trusts
#   rogue_client.pem/.key     a client certificate signed by the rogue CA
# ECDSA P-256 keys (fast to make), valid for two days.
#
# usage: make_certs.sh DIR
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() {  # leaf NAME CA CN EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "layerserve test CA"
ca rogue_ca "layerserve rogue CA"
leaf server ca localhost \
  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
leaf client ca "layerserve test client" \
  "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
leaf rogue_client rogue_ca "layerserve rogue client" \
  "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
