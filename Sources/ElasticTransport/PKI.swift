import Crypto
import ElasticCore
import Foundation
import SwiftASN1
import X509

/// What a certificate lets its holder do; carried in the subject's organizational unit.
public enum Role: String, Sendable, Equatable {
    case controller = "elastic-controller"
    case admin = "elastic-admin"
    case node = "elastic-node"
}

/// A private key and the certificate that names it.
public struct Identity: Sendable {
    public let key: P256.Signing.PrivateKey
    public let certificate: Certificate

    public init(key: P256.Signing.PrivateKey, certificate: Certificate) {
        self.key = key
        self.certificate = certificate
    }

    public var certificateDER: [UInt8] { certificate.derBytes }
}

/// The cluster's certificate authority: an ECDSA P-256 key and a self-signed certificate.
/// It issues the controller's, the administrator's and every node's certificate.
public struct CertificateAuthority: Sendable {
    public let identity: Identity

    public var certificate: Certificate { identity.certificate }

    public init(identity: Identity) { self.identity = identity }

    /// A new CA, valid for `lifetime` from `now`.
    public static func create(name: String = "elastic cluster CA", now: Date = Date(), lifetime: TimeInterval = 10 * 365 * 86400) throws -> CertificateAuthority {
        let key = P256.Signing.PrivateKey()
        let certKey = Certificate.PrivateKey(key)
        let subject = try DistinguishedName {
            OrganizationName("elastic")
            CommonName(name)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: certKey.publicKey)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: certKey.publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(lifetime),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: certKey)
        return CertificateAuthority(identity: Identity(key: key, certificate: certificate))
    }

    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo: what a joining worker pins.
    public var hash: String { PKI.hash(of: certificate) }

    /// Issues a certificate for `publicKey` with common name `name` and `role`, valid from
    /// `notBefore` for `lifetime`. Controllers get DNS/IP subject alternative names.
    public func issue(
        publicKey: Certificate.PublicKey, name: String, role: Role, alternativeNames: [String] = [],
        notBefore: Date = Date().addingTimeInterval(-300), lifetime: TimeInterval
    ) throws -> Certificate {
        let subject = try DistinguishedName {
            OrganizationName("elastic")
            OrganizationalUnitName(role.rawValue)
            CommonName(name)
        }
        var names: [GeneralName] = [.dnsName(name)]
        for alternative in alternativeNames {
            if let ip = IPAddressBytes(alternative) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ip.bytes[...])))
            } else {
                names.append(.dnsName(alternative))
            }
        }
        let usages: [ExtendedKeyUsage.Usage] = role == .controller ? [.serverAuth, .clientAuth] : [.clientAuth, .serverAuth]
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
            try ExtendedKeyUsage(usages)
            SubjectAlternativeNames(names)
            AuthorityKeyIdentifier(keyIdentifier: try? certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: notBefore, notValidAfter: notBefore.addingTimeInterval(lifetime),
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(identity.key))
    }

    /// A new key and a certificate for it.
    public func issueIdentity(
        name: String, role: Role, alternativeNames: [String] = [],
        notBefore: Date = Date().addingTimeInterval(-300), lifetime: TimeInterval
    ) throws -> Identity {
        let key = P256.Signing.PrivateKey()
        let certificate = try issue(
            publicKey: Certificate.PublicKey(key.publicKey), name: name, role: role,
            alternativeNames: alternativeNames, notBefore: notBefore, lifetime: lifetime)
        return Identity(key: key, certificate: certificate)
    }

    /// Checks a node's certificate signing request and issues its certificate.
    public func sign(csrDER: [UInt8], node: NodeID, lifetime: TimeInterval, now: Date = Date()) throws(PKIError) -> Certificate {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(derEncoded: csrDER)
        } catch {
            throw PKIError("the certificate signing request is not valid DER: \(error)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw PKIError("the certificate signing request's signature does not match its key")
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil else {
            throw PKIError("the certificate signing request must carry an ECDSA P-256 key")
        }
        do {
            // Valid from 5 minutes ago (clock skew between hosts) until `lifetime` from now.
            return try issue(publicKey: csr.publicKey, name: node.value, role: .node, notBefore: now.addingTimeInterval(-300), lifetime: lifetime + 300)
        } catch {
            throw PKIError("could not issue a certificate: \(error)")
        }
    }
}

public struct PKIError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Helpers shared by the controller, the workers and the CLI.
public enum PKI {
    /// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (the kubeadm CA-hash form).
    public static func hash(of certificate: Certificate) -> String {
        let spki = (try? derBytes(of: certificate.publicKey)) ?? []
        let digest = SHA256.hash(data: spki)
        return "sha256:" + digest.map { String(format: "%02x", $0) }.joined()
    }

    /// A certificate signing request for `key`, naming `name`.
    public static func csr(key: P256.Signing.PrivateKey, name: String) throws -> [UInt8] {
        let subject = try DistinguishedName { CommonName(name) }
        let csr = try CertificateSigningRequest(
            version: .v1, subject: subject, privateKey: Certificate.PrivateKey(key),
            attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: .ecdsaWithSHA256)
        return try derBytes(of: csr)
    }

    /// The subject's common name.
    public static func commonName(of certificate: Certificate) -> String? {
        attribute(.RDNAttributeType.commonName, of: certificate)
    }

    /// The role recorded in the subject's organizational unit.
    public static func role(of certificate: Certificate) -> Role? {
        attribute(.RDNAttributeType.organizationalUnitName, of: certificate).flatMap(Role.init(rawValue:))
    }

    private static func attribute(_ type: ASN1ObjectIdentifier, of certificate: Certificate) -> String? {
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == type {
                return String(attribute.value)
            }
        }
        return nil
    }
}

extension Certificate {
    public var derBytes: [UInt8] { (try? ElasticTransport.derBytes(of: self)) ?? [] }

    public var pemString: String { (try? serializeAsPEM().pemString) ?? "" }
}

func derBytes(of value: some DERSerializable) throws -> [UInt8] {
    var serializer = DER.Serializer()
    try serializer.serialize(value)
    return serializer.serializedBytes
}

/// An IPv4 or IPv6 literal as network-order bytes.
struct IPAddressBytes {
    let bytes: [UInt8]

    init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }
}
