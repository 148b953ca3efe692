// Package csiprovider is a provider for the Secrets Store CSI driver
// (sigs.k8s.io/secrets-store-csi-driver): it serves the driver's provider
// gRPC API (provider/v1alpha1: Version, Mount) on the socket the driver
// looks for under the name of a SecretProviderClass's `provider`, "azure",
// so SecretProviderClasses written for the Azure Key Vault provider apply
// unchanged.
//
// Mount reads the class's parameters the way the Azure provider does
// (keyvaultName, objects, tenantId, cloudName, clientID, usePodIdentity,
// useVMManagedIdentity, userAssignedIdentityID), obtains a token for the
// identity the mounting pod may use (Credentials), and fetches every object
// with the unmodified azsecrets client. It returns the files for the driver
// to write, or an error naming the object and Key Vault's error code; never
// part of the objects.
//
// Limits: objectType secret only (key and cert are refused by name); a
// certificate-backed secret is returned as Key Vault stores it (PEM as is,
// PKCS#12 only with objectFormat pfx); a nodePublishSecretRef service
// principal is refused (podid keeps no client secrets on nodes). See
// docs/csi.md.
package csiprovider
