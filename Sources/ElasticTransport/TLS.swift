import Crypto
import NIOSSL
import X509

/// The TLS contexts of every channel. All use TLS 1.3 and trust only the cluster CA, except the
/// one a joining worker uses to fetch the CA before it can verify anything (`caDiscovery`),
/// whose answer it checks against the pinned CA hash.
public enum TLSContexts {
    /// The controller's listener: a client certificate is verified against the CA when one is
    /// presented; connections without one may only bootstrap (the controller enforces it).
    public static func controller(identity: Identity, ca: Certificate) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try identity.nioCertificate())],
            privateKey: .privateKey(try identity.nioPrivateKey()))
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .optionalVerification
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: ca.derBytes, format: .der)])
        return try NIOSSLContext(configuration: configuration)
    }

    /// A worker's data-plane listener: peers must present a certificate from the CA.
    public static func peerServer(identity: Identity, ca: Certificate) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try identity.nioCertificate())],
            privateKey: .privateKey(try identity.nioPrivateKey()))
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: ca.derBytes, format: .der)])
        return try NIOSSLContext(configuration: configuration)
    }

    /// A member or an administrator: mutual TLS, the peer verified against the CA.
    public static func mutualClient(identity: Identity, ca: Certificate) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: ca.derBytes, format: .der)])
        configuration.certificateChain = [.certificate(try identity.nioCertificate())]
        configuration.privateKey = .privateKey(try identity.nioPrivateKey())
        return try NIOSSLContext(configuration: configuration)
    }

    /// A joining worker that holds the (pinned) CA but no certificate yet: the controller is
    /// verified, the worker is not.
    public static func serverAuthenticatedClient(ca: Certificate) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: ca.derBytes, format: .der)])
        return try NIOSSLContext(configuration: configuration)
    }

    /// Only for fetching the CA certificate, whose hash the worker then compares with the one
    /// it was given; nothing else is ever sent on such a connection.
    public static func caDiscovery() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .none
        return try NIOSSLContext(configuration: configuration)
    }
}

extension Identity {
    func nioCertificate() throws -> NIOSSLCertificate {
        try NIOSSLCertificate(bytes: certificate.derBytes, format: .der)
    }

    func nioPrivateKey() throws -> NIOSSLPrivateKey {
        try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem)
    }
}
