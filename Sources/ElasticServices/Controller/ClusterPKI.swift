import ElasticTransport
import Foundation

/// `elastic certs init`: the cluster CA, the controller's certificate and the admin certificate.
public enum ClusterPKI {
    public struct Created: Sendable {
        public let directory: URL
        public let caHash: String
    }

    /// Creates the PKI in `<dataDirectory>/pki`. Refuses to overwrite an existing CA unless
    /// `force`, because every certificate it issued would stop working.
    public static func initialize(dataDirectory: URL, alternativeNames: [String], force: Bool) throws -> Created {
        let pki = PKIFiles.controllerDirectory(dataDirectory: dataDirectory)
        let caFile = pki.appendingPathComponent(PKIFiles.caCertificate)
        if FileManager.default.fileExists(atPath: caFile.path) && !force {
            throw ElasticError("\(caFile.path) already exists; every worker certificate depends on it. Use --force to replace it (all workers must join again)")
        }
        do {
            try FileManager.default.createDirectory(at: pki, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ElasticError("cannot create \(pki.path): \(error.localizedDescription)")
        }
        let authority = try CertificateAuthority.create()
        var names = ["localhost", "127.0.0.1", "::1"]
        let host = ProcessInfo.processInfo.hostName
        if !host.isEmpty && !names.contains(host) { names.append(host) }
        names += alternativeNames.filter { !names.contains($0) }
        let year: TimeInterval = 365 * 86400
        let controller = try authority.issueIdentity(name: "controller", role: .controller, alternativeNames: names, lifetime: year)
        let admin = try authority.issueIdentity(name: "admin", role: .admin, lifetime: year)
        try PKIFiles.write(authority.identity, certificate: caFile, key: pki.appendingPathComponent(PKIFiles.caKey))
        try PKIFiles.write(controller, certificate: pki.appendingPathComponent(PKIFiles.controllerCertificate), key: pki.appendingPathComponent(PKIFiles.controllerKey))
        try PKIFiles.write(admin, certificate: pki.appendingPathComponent(PKIFiles.adminCertificate), key: pki.appendingPathComponent(PKIFiles.adminKey))
        return Created(directory: pki, caHash: authority.hash)
    }

    /// The CA hash of an existing PKI.
    public static func caHash(dataDirectory: URL) throws -> String {
        let file = PKIFiles.controllerDirectory(dataDirectory: dataDirectory).appendingPathComponent(PKIFiles.caCertificate)
        do {
            return PKI.hash(of: try PKIFiles.readCertificate(file))
        } catch {
            throw ElasticError("cannot read the cluster CA: \(error); run 'elastic certs init --dir \(dataDirectory.path)' first")
        }
    }
}
