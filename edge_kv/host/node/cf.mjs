// request.cf for local requests, and the host-only test hook that overrides it.

/** The header a test sends to set request.cf fields; the host strips it before the Worker runs. */
export const TEST_CF_HEADER = "x-edge-kv-test-cf";

/** A realistic IncomingRequestCfProperties for a client in San Jose, served by the SJC colo. */
export function defaultCf() {
  return {
    asn: 13335,
    asOrganization: "Cloudflare",
    colo: "SJC",
    country: "US",
    isEUCountry: false,
    city: "San Jose",
    continent: "NA",
    region: "California",
    regionCode: "CA",
    metroCode: "807",
    postalCode: "95113",
    latitude: "37.33939",
    longitude: "-121.89496",
    timezone: "America/Los_Angeles",
    httpProtocol: "HTTP/1.1",
    tlsVersion: "TLSv1.3",
    tlsCipher: "AEAD-AES128-GCM-SHA256",
    clientTcpRtt: 3,
    requestPriority: "",
    edgeRequestKeepAliveStatus: 1,
    clientAcceptEncoding: "gzip, deflate, br",
    botManagement: { score: 99, verifiedBot: false, staticResource: false },
  };
}

/**
 * Parse the test header: a JSON object merged over the default cf. The special member
 * `connectingIp` is not a cf field: it sets the CF-Connecting-IP header instead.
 * Returns {cf, connectingIp} or throws Error with a message fit for a 400 problem.
 */
export function parseTestCf(raw) {
  let override;
  try {
    override = JSON.parse(raw);
  } catch (e) {
    throw new Error(`${TEST_CF_HEADER} is not valid JSON: ${e.message}`);
  }
  if (override === null || typeof override !== "object" || Array.isArray(override)) {
    throw new Error(`${TEST_CF_HEADER} must be a JSON object`);
  }
  const { connectingIp, ...fields } = override;
  if (connectingIp !== undefined && typeof connectingIp !== "string") {
    throw new Error(`${TEST_CF_HEADER}: connectingIp must be a string`);
  }
  return { cf: { ...defaultCf(), ...fields }, connectingIp };
}
