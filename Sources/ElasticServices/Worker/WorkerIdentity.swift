import Crypto
import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import ElasticNumerics
import X509

/// A worker's data dir: its key, its node certificate and the cluster CA.
public struct WorkerPaths: Sendable {
    public let dataDirectory: URL

    public init(dataDirectory: URL) { self.dataDirectory = dataDirectory }

    public var certificate: URL { dataDirectory.appendingPathComponent(PKIFiles.nodeCertificate) }
    public var key: URL { dataDirectory.appendingPathComponent(PKIFiles.nodeKey) }
    public var ca: URL { dataDirectory.appendingPathComponent(PKIFiles.caCertificate) }

    public var hasIdentity: Bool { FileManager.default.fileExists(atPath: certificate.path) }

    /// Whether the stored certificate has expired (false when there is none or it is unreadable).
    public func hasExpiredCertificate(now: Date = Date()) -> Bool {
        guard let stored = try? PKIFiles.readCertificate(certificate) else { return false }
        return stored.notValidAfter <= now
    }

    /// The stored identity and CA, refused when the certificate has expired.
    public func load(now: Date = Date()) throws -> (identity: Identity, ca: Certificate) {
        do {
            let identity = try PKIFiles.readIdentity(certificate: certificate, key: key)
            let ca = try PKIFiles.readCertificate(ca)
            if identity.certificate.notValidAfter <= now {
                throw ElasticError("the node certificate in \(dataDirectory.path) expired at \(identity.certificate.notValidAfter); join again with --token and --ca-hash")
            }
            return (identity, ca)
        } catch let error as ElasticError {
            throw error
        } catch {
            throw ElasticError("cannot load this worker's certificate from \(dataDirectory.path): \(error)")
        }
    }
}

/// The kubeadm-style bootstrap of a new worker:
/// 1. fetch the controller's CA over TLS that verifies nothing, and compare its hash with the
///    pinned `--ca-hash` (refuse on mismatch);
/// 2. over TLS that verifies the controller against that CA, send a CSR with the token;
/// 3. check the certificate that comes back and store key, certificate and CA.
public enum JoinBootstrap {
    public static func run(
        controller: Endpoint, token: String, caHash: String, name: String, paths: WorkerPaths,
        progress: (String) -> Void = { _ in }
    ) async throws -> (identity: Identity, ca: Certificate) {
        guard case .success = BootstrapTokens.parse(token) else {
            throw ElasticError(BootstrapTokens.TokenFormatError().explanation)
        }
        progress("fetching the cluster CA from \(controller)")
        let fetched = ContinuousClock.now
        let bundle = try await ControlClient.exchange(.caRequest, with: controller, tls: try TLSContexts.caDiscovery(), expecting: nil)
        guard case .caBundle(let der) = bundle, let ca = try? Certificate(derEncoded: der) else {
            throw ElasticError("the controller at \(controller) did not send a CA certificate")
        }
        let presented = PKI.hash(of: ca)
        progress("checking the CA's hash against --ca-hash (fetched in \((ContinuousClock.now - fetched).shortDescription))")
        guard presented == caHash.lowercased() else {
            throw ElasticError("the controller at \(controller) presented CA \(presented), which does not match --ca-hash \(caHash); refusing to join (wrong controller, or someone in between)")
        }
        progress("requesting a node certificate as '\(name)' (the CA matches)")
        let key = P256.Signing.PrivateKey()
        let csr = try PKI.csr(key: key, name: name)
        let reply = try await ControlClient.exchange(
            .bootstrapRequest(BootstrapRequest(token: token, name: name, csrDER: csr)),
            with: controller, tls: try TLSContexts.serverAuthenticatedClient(ca: ca))
        guard case .bootstrapGranted(let granted) = reply, let certificate = try? Certificate(derEncoded: granted.certificateDER) else {
            throw ElasticError("the controller at \(controller) answered the join with something other than a certificate")
        }
        guard ca.publicKey.isValidSignature(certificate.signature, for: certificate),
              P256.Signing.PublicKey(certificate.publicKey)?.derRepresentation == key.publicKey.derRepresentation,
              PKI.commonName(of: certificate) == granted.node.value
        else {
            throw ElasticError("the certificate the controller issued does not match this request or is not signed by the cluster CA")
        }
        let identity = Identity(key: key, certificate: certificate)
        do {
            try PKIFiles.write(identity, certificate: paths.certificate, key: paths.key)
            try PKIFiles.write(ca, to: paths.ca)
        } catch {
            throw ElasticError("cannot store the certificate in \(paths.dataDirectory.path): \(error)")
        }
        progress("certificate for node '\(granted.node)' stored, valid until \(certificate.notValidAfter)")
        return (identity, ca)
    }
}

extension WorkerConfiguration {
    /// Everything `elastic join` does before the worker runs: use the certificate stored in the
    /// data dir, or bootstrap one with the token and pinned CA hash; then measure capacity.
    public static func prepare(
        controller: Endpoint, token: String?, caHash: String?, name: String, dataDirectory: URL,
        softwareVersion: String, computeThreads: Int = 1, logger: Logger
    ) async throws -> WorkerConfiguration {
        let paths = WorkerPaths(dataDirectory: dataDirectory)
        let identity: Identity
        let ca: Certificate
        let renew = paths.hasExpiredCertificate() && token != nil && caHash != nil
        if renew {
            logger.warning("the node certificate in \(dataDirectory.path) has expired; joining again with the token")
        }
        let bootstrap = !(paths.hasIdentity && !renew)
        // Each step of the join, named in the log: bootstrap (CA, hash, certificate) or the
        // stored certificate, then the capacity probe and the connection.
        let progress = ProgressReporter("join", output: .lines { logger.info("\($0)") }, steps: bootstrap ? 6 : 3)
        if !bootstrap {
            (identity, ca) = try paths.load()
            if let caHash, PKI.hash(of: ca) != caHash.lowercased() {
                throw ElasticError("the CA stored in \(dataDirectory.path) is \(PKI.hash(of: ca)), not --ca-hash \(caHash); use another --data-dir for another cluster")
            }
            progress.step("using the node certificate in \(dataDirectory.path) (node \(PKI.commonName(of: identity.certificate) ?? "?"))")
        } else {
            guard let token, let caHash else {
                throw ElasticError("this worker has no certificate in \(dataDirectory.path) yet: pass --token and --ca-hash (printed by 'elastic token create')")
            }
            (identity, ca) = try await JoinBootstrap.run(
                controller: controller, token: token, caHash: caHash, name: name, paths: paths,
                progress: progress.step)
        }
        progress.step("measuring this machine's capacity")
        BLAS.threads = computeThreads
        let capacity = CapacityProbe.measure()
        logger.info("capacity: \(capacity.cores) cores, \(capacity.memoryBytes >> 20) MiB, \(String(format: "%.1f", capacity.gflops)) GFLOP/s")
        progress.step("connecting to the controller at \(controller)")
        var configuration = WorkerConfiguration(controller: controller, identity: identity, ca: ca, capacity: capacity, softwareVersion: softwareVersion)
        configuration.computeThreads = computeThreads
        return configuration
    }
}
