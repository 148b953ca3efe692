package csiprovider

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Content types of a certificate's secret.
const (
	ContentTypePFX = "application/x-pkcs12"
	ContentTypePEM = "application/x-pem-file"
)

// pfxToPEM converts a certificate's PKCS#12 secret (base64, no password,
// as Key Vault keeps it) to what the Azure provider writes: the private key
// as PKCS#8, then the certificate, then the rest of the chain.
func pfxToPEM(value string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return "", errors.New("not base64")
	}
	key, leaf, cas, err := pkcs12.DecodeChain(raw, "")
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, c := range append([]*x509.Certificate{leaf}, cas...) {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out), nil
}

// publicKeyPEM is a key's public part as a PKIX "PUBLIC KEY" PEM block, as
// the Azure provider writes objectType key: RSA and EC keys only.
func publicKeyPEM(k *azkeys.JSONWebKey) ([]byte, error) {
	if k.Kty == nil {
		return nil, errors.New("the key has no type")
	}
	var pub any
	switch *k.Kty {
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		if len(k.N) == 0 || len(k.E) == 0 || len(k.E) > 4 {
			return nil, errors.New("the RSA key has no valid modulus or exponent")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(new(big.Int).SetBytes(k.E).Int64())}
	case azkeys.KeyTypeEC, azkeys.KeyTypeECHSM:
		var crv elliptic.Curve
		switch {
		case k.Crv == nil:
			return nil, errors.New("the EC key has no curve")
		case *k.Crv == azkeys.CurveNameP256:
			crv = elliptic.P256()
		case *k.Crv == azkeys.CurveNameP384:
			crv = elliptic.P384()
		case *k.Crv == azkeys.CurveNameP521:
			crv = elliptic.P521()
		default:
			return nil, fmt.Errorf("curve %s is not supported", *k.Crv)
		}
		size := (crv.Params().BitSize + 7) / 8
		if len(k.X) == 0 || len(k.Y) == 0 || len(k.X) > size || len(k.Y) > size {
			return nil, errors.New("the EC key has no valid point")
		}
		// The uncompressed point; the parser checks it is on the curve.
		point := append([]byte{4}, append(make([]byte, size-len(k.X)), k.X...)...)
		point = append(point, append(make([]byte, size-len(k.Y)), k.Y...)...)
		p, err := ecdsa.ParseUncompressedPublicKey(crv, point)
		if err != nil {
			return nil, errors.New("the EC key's point is not on its curve")
		}
		pub = p
	default:
		return nil, fmt.Errorf("key type %s is not supported (RSA or EC)", *k.Kty)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
