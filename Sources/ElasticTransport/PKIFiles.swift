import Crypto
import Foundation
import X509

/// Reads and writes keys and certificates as PEM files. Keys are written with mode 0600, every
/// file atomically.
public enum PKIFiles {
    /// The controller's PKI folder inside its data dir.
    public static func controllerDirectory(dataDirectory: URL) -> URL {
        dataDirectory.appendingPathComponent("pki", isDirectory: true)
    }

    public static let caCertificate = "ca.pem"
    public static let caKey = "ca.key"
    public static let controllerCertificate = "controller.pem"
    public static let controllerKey = "controller.key"
    public static let adminCertificate = "admin.pem"
    public static let adminKey = "admin.key"
    public static let nodeCertificate = "node.pem"
    public static let nodeKey = "node.key"

    public static func readCertificate(_ url: URL) throws(PKIError) -> Certificate {
        let text = try readText(url)
        do {
            return try Certificate(pemEncoded: text)
        } catch {
            throw PKIError("\(url.path) is not a PEM certificate: \(error)")
        }
    }

    public static func readIdentity(certificate: URL, key: URL) throws(PKIError) -> Identity {
        let cert = try readCertificate(certificate)
        let text = try readText(key)
        let privateKey: P256.Signing.PrivateKey
        do {
            privateKey = try P256.Signing.PrivateKey(pemRepresentation: text)
        } catch {
            throw PKIError("\(key.path) is not a PEM ECDSA P-256 private key: \(error)")
        }
        guard privateKey.publicKey.derRepresentation == P256.Signing.PublicKey(cert.publicKey)?.derRepresentation else {
            throw PKIError("\(key.path) does not belong to the certificate \(certificate.path)")
        }
        return Identity(key: privateKey, certificate: cert)
    }

    public static func write(_ identity: Identity, certificate: URL, key: URL) throws(PKIError) {
        try write(identity.key.pemRepresentation + "\n", to: key, mode: 0o600)
        try write(identity.certificate, to: certificate)
    }

    public static func write(_ certificate: Certificate, to url: URL) throws(PKIError) {
        try write(certificate.pemString + "\n", to: url, mode: 0o644)
    }

    public static func write(_ text: String, to url: URL, mode: Int) throws(PKIError) {
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
            guard FileManager.default.createFile(atPath: temporary.path, contents: nil, attributes: [.posixPermissions: mode]) else {
                throw PKIError("cannot create \(temporary.path) (check the folder's permissions)")
            }
            let handle = try FileHandle(forWritingTo: temporary)
            try handle.write(contentsOf: Data(text.utf8))
            try handle.synchronize()
            try handle.close()
            if rename(temporary.path, url.path) != 0 {
                throw PKIError("cannot rename \(temporary.path) to \(url.path): \(String(cString: strerror(errno)))")
            }
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    private static func readText(_ url: URL) throws(PKIError) -> String {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw PKIError("\(url.path) does not exist")
        }
        guard let data = FileManager.default.contents(atPath: url.path), let text = String(data: data, encoding: .utf8) else {
            throw PKIError("cannot read \(url.path) (check its permissions)")
        }
        return text
    }
}
