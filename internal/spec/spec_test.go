package spec_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// env says every directory exists except one named "missing".
var env = spec.Env{
	DirExists:  func(dir string) bool { return !strings.HasSuffix(dir, "missing") },
	FileExists: func(file string) bool { return !strings.HasSuffix(file, "missing.pem") },
}

func load(t *testing.T, src string) (*spec.Stack, error) {
	t.Helper()
	return spec.Load("bulkhead.yaml", []byte(src), env)
}

// TestErrors checks that every kind of mistake is caught, placed at the
// right line and column, named by field, and explained.
func TestErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // each must appear in the error text, in one line
	}{
		{"bad octet", "networks:\n  private: 837.234.1.10/24\n",
			[]string{"bulkhead.yaml:2:12: networks.private: \"837.234.1.10\" is not an IPv4 address: 837 is not an octet (0-255); write a subnet in CIDR form"}},
		{"bad publish address", "publish:\n  http: 837.234.1.10:80\n",
			[]string{"bulkhead.yaml:2:9: publish.http: \"837.234.1.10\" is not an IPv4 address: 837 is not an octet"}},
		{"no prefix length", "networks:\n  private: 10.1.0.0\n",
			[]string{"2:12: networks.private: \"10.1.0.0\" has no prefix length"}},
		{"host bits", "networks:\n  private: 10.1.0.5/24\n",
			[]string{"2:12: networks.private: \"10.1.0.5/24\" has host bits set; the subnet is 10.1.0.0/24"}},
		{"overlap", "networks:\n  private: 10.1.0.0/16\n  public: 10.1.5.0/28\n",
			[]string{"3:11: networks.public: 10.1.5.0/28 overlaps networks.private (10.1.0.0/16); pick subnets that do not overlap"}},
		{"public equals private", "networks:\n  private: 10.1.0.0/24\n  public: 10.1.0.0/24\n",
			[]string{"3:11: networks.public: the public subnet is the same as the private one (10.1.0.0/24)"}},
		{"dmz overlap", "networks:\n  dmz: 10.77.0.128/25\n",
			[]string{"2:8: networks.dmz: 10.77.0.128/25 overlaps networks.private (10.77.0.0/24)"}},
		{"not private", "networks:\n  public: 8.8.8.0/28\n",
			[]string{"2:11: networks.public: 8.8.8.0/28 is not a private-use subnet"}},
		{"unknown software", "tiers:\n  edge: {}\n  app:\n    software: tomcat\n",
			[]string{"4:15: tiers.app.software: unknown software \"tomcat\" for role app; for app use one of: apache2, nginx"}},
		{"replicas zero", "tiers:\n  edge: {}\n  app:\n    replicas: 0\n",
			[]string{"4:15: tiers.app.replicas: replicas is 0; use a number from 1 to 250"}},
		{"replicas too many", "tiers:\n  edge: {}\n  app:\n    replicas: 251\n",
			[]string{"4:15: tiers.app.replicas: replicas is 251; use a number from 1 to 250"}},
		{"db cannot scale", "tiers:\n  edge: {}\n  app: {}\n  db:\n    replicas: 2\n",
			[]string{"5:15: tiers.db.replicas: a db tier cannot have 2 replicas; only app and static tiers scale"}},
		{"stack name too long", "name: averylongname\n",
			[]string{"1:7: name: \"averylongname\" is 13 characters; it prefixes kernel interface names such as \"averylongname-106p\", which Linux limits to 15; use at most 10 characters"}},
		{"stack name invalid", "name: My_Site\n",
			[]string{"1:7: name: \"My_Site\" is not a valid stack name"}},
		{"tier name invalid", "tiers:\n  edge: {}\n  Web_1:\n    role: app\n",
			[]string{"3:3: tiers.Web_1: \"Web_1\" is not a valid tier name"}},
		{"duplicate tier", "tiers:\n  edge: {}\n  app: {}\n  app: {}\n",
			[]string{"4:3: tiers.app: name is used twice"}},
		{"duplicate field", "name: a\nname: b\n",
			[]string{"2:1: name: field is set twice"}},
		{"second tier of a role", "tiers:\n  edge: {}\n  app: {}\n  web:\n    role: app\n",
			[]string{"tiers.web: a second app tier"}},
		{"instance name clash", "tiers:\n  edge: {}\n  app:\n    replicas: 2\n  app-1:\n    role: cache\n",
			[]string{"tiers.app-1: node name \"app-1\" is also a node of tier \"app\""}},
		{"reserved name", "tiers:\n  edge: {}\n  app: {}\n  outside:\n    role: cache\n",
			[]string{"4:3: tiers.outside: \"outside\" is reserved"}},
		{"unknown role", "tiers:\n  edge: {}\n  app: {}\n  x:\n    role: mailer\n",
			[]string{"5:11: tiers.x.role: unknown role \"mailer\""}},
		{"no edge", "tiers:\n  app: {}\n",
			[]string{"2:3: tiers: the stack has no edge tier"}},
		{"flow to unknown node", "flows:\n  - from: app\n    to: mailer\n    port: 25\n",
			[]string{"3:9: flows[0].to: unknown node \"mailer\"; name one of the tiers: app, cache, db, edge, monitor, static, storage"}},
		{"flow port", "flows:\n  - from: app\n    to: db\n    port: 70000\n",
			[]string{"4:11: flows[0].port: port 70000 is out of range; use a port from 1 to 65535"}},
		{"flow port zero", "flows:\n  - from: app\n    to: db\n    port: 0\n",
			[]string{"4:11: flows[0].port: port 0 is out of range"}},
		{"publish port", "publish:\n  http: 127.0.0.1:0\n",
			[]string{"2:9: publish.http: \"127.0.0.1:0\": port \"0\" is outside 1-65535"}},
		{"unknown field", "netwroks:\n  private: 10.1.0.0/24\n",
			[]string{"1:1: netwroks: unknown field; did you mean \"networks\"?"}},
		{"unknown nested field", "tiers:\n  edge: {}\n  app:\n    replica: 3\n",
			[]string{"4:5: tiers.app.replica: unknown field; did you mean \"replicas\"?"}},
		{"missing site dir", "site:\n  dir: ./missing\n",
			[]string{"2:8: site.dir: directory missing does not exist; create it, or run \"bulkhead init\""}},
		{"subnet too small", "networks:\n  private: 10.1.0.0/28\ntiers:\n  edge: {}\n  app:\n    replicas: 20\n",
			[]string{"2:12: networks.private: 10.1.0.0/28 has room for 14 addresses but the stack needs 22; use a /27 or larger"}},
		{"250 replicas need a /23", "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: 250\n",
			[]string{"1:1: networks.private: 10.77.0.0/24 has room for 254 addresses but the stack needs 256; use a /23 or larger"}},
		{"not a number", "tiers:\n  edge: {}\n  app:\n    replicas: two\n",
			[]string{"4:15: tiers.app.replicas: expected a whole number, got \"two\""}},
		{"storage too small for its clients", "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage:\n    protocol: sftp\n    memory: 256M\n    pids: 128\n  app:\n    replicas: 100\n",
			[]string{"8:13: tiers.storage.memory: memory limit 256M is too small for 101 SFTP clients; give it at least 808M (8M per client), or remove the line for that default",
				"9:11: tiers.storage.pids: pids limit 128 is too small for 101 SFTP clients; give it at least 436 (4 per client and 32)"}},
		{"bad memory", "tiers:\n  edge:\n    memory: lots\n  app: {}\n",
			[]string{"3:13: tiers.edge.memory: \"lots\" is not a size; write a size like 256M"}},
		{"bad disk", "tiers:\n  edge: {}\n  app: {}\n  db:\n    disk: 4 gigs\n",
			[]string{"5:11: tiers.db.disk: \"4 gigs\" is not a size; write a size like 256M or 1G"}},
		{"db disk too small", "tiers:\n  edge: {}\n  app: {}\n  db:\n    disk: 128M\n",
			[]string{"5:11: tiers.db.disk: disk 128M is too small: each db node's filesystem needs room for ext4's metadata, its data and its logs; give it at least 256M, or remove the line for the default 4G"}},
		{"storage disk too small", "tiers:\n  edge: {}\n  app: {}\n  storage:\n    disk: 64M\n",
			[]string{"5:11: tiers.storage.disk: disk 64M is too small: each storage node's filesystem", "give it at least 128M, or remove the line for the default 4G"}},
		{"app disk too small", "tiers:\n  edge: {}\n  web:\n    role: app\n    disk: 1M\n",
			[]string{"5:11: tiers.web.disk: disk 1M is too small: each app node's filesystem", "give it at least 64M, or remove the line for the default 512M"}},
		{"disk zero", "tiers:\n  edge:\n    disk: 0\n  app: {}\n",
			[]string{"3:11: tiers.edge.disk: disk 0 is too small: each edge node's filesystem", "give it at least 64M"}},
		{"cpu zero", "tiers:\n  edge:\n    cpu: 0\n  app: {}\n",
			[]string{"3:10: tiers.edge.cpu: cpu weight 0 is out of range; use a weight from 1 to 10000; 100 is an even share, and the default for edge is 200"}},
		{"cpu too large", "tiers:\n  edge: {}\n  app:\n    cpu: 10001\n",
			[]string{"4:10: tiers.app.cpu: cpu weight 10001 is out of range; use a weight from 1 to 10000; 100 is an even share, and the default for app is 100"}},
		{"cpu negative", "tiers:\n  edge: {}\n  app:\n    cpu: -5\n",
			[]string{"4:10: tiers.app.cpu: cpu weight -5 is out of range"}},
		{"cpu not a number", "tiers:\n  edge: {}\n  app:\n    cpu: half\n",
			[]string{"4:10: tiers.app.cpu: expected a whole number, got \"half\"; write digits only"}},
		{"static path injection", "site:\n  static: [\"/a/; deny all\"]\n",
			[]string{"2:12: site.static[0]: \"/a/; deny all\" is neither a path prefix nor an extension glob"}},
		{"static dot segment", "site:\n  static: [/assets/../]\n",
			[]string{"2:12: site.static[0]: \"/assets/../\" is neither a path prefix nor an extension glob"}},
		{"static dotfile dir", "site:\n  static: [/.git/]\n",
			[]string{"2:12: site.static[0]: \"/.git/\" is neither"}},
		{"writable dotfile", "site:\n  writable: [uploads/.ssh]\n",
			[]string{"2:14: site.writable[0]: \"uploads/.ssh\" is not a clean relative path"}},
		{"publish on every address", "publish:\n  http: 0.0.0.0:8080\n",
			[]string{"2:9: publish.http: 0.0.0.0 is not one address of this host; publish on 127.0.0.1"}},
		{"publish on IPv6", "publish:\n  https: '[::1]:8443'\n",
			[]string{"2:10: publish.https: ::1 is not an IPv4 address: the edge has only IPv4; publish on 127.0.0.1"}},
		{"certificate without key", "publish:\n  certificate: tls/site.crt\n",
			[]string{"2:16: publish.certificate: a certificate without its key; set publish.key"}},
		{"key file missing", "publish:\n  certificate: site.crt\n  key: missing.pem\n",
			[]string{"3:8: publish.key: file missing.pem does not exist"}},
		{"check not a path", "site:\n  check: healthz\n",
			[]string{"2:10: site.check: \"healthz\" is not a request path; write a request path starting with /"}},
		{"writable escapes", "site:\n  writable: [../etc]\n",
			[]string{"2:14: site.writable[0]: \"../etc\" is not a clean relative path inside the site"}},
		{"db name", "site:\n  database:\n    name: \"x'; drop\"\n",
			[]string{"3:11: site.database.name: \"x'; drop\" is not a valid database name"}},
		{"protocol on non-storage", "tiers:\n  edge:\n    protocol: nfs\n  app: {}\n",
			[]string{"3:15: tiers.edge.protocol: protocol is set on a edge tier"}},
		{"bad protocol", "tiers:\n  edge: {}\n  app: {}\n  storage:\n    protocol: smb\n",
			[]string{"5:15: tiers.storage.protocol: unknown storage protocol \"smb\""}},
		{"yaml syntax", "name: [\n",
			[]string{"bulkhead.yaml:1:1: invalid YAML: did not find expected node content"}},
		{"expected list", "site:\n  static: /assets/\n",
			[]string{"2:11: site.static: expected a list"}},
		{"mail without the tier", "mail:\n  smarthost: 192.0.2.25:587\n",
			[]string{"2:3: mail: mail settings, but the stack has no mail tier to use them; add a tier \"mail:\" under tiers"}},
		{"smarthost name", mailTier + "mail:\n  smarthost: smtp.example.com:587\n",
			[]string{"10:14: mail.smarthost: \"smtp.example.com\" is a name, not an address; write the smarthost's IPv4 address"}},
		{"smarthost no port", mailTier + "mail:\n  smarthost: 192.0.2.25\n",
			[]string{"10:14: mail.smarthost: \"192.0.2.25\" is not an IPv4 address and port; write IPV4:PORT"}},
		{"smarthost bad port", mailTier + "mail:\n  smarthost: 192.0.2.25:70000\n",
			[]string{"10:14: mail.smarthost: port \"70000\" is out of range"}},
		{"smarthost loopback", mailTier + "mail:\n  smarthost: 127.0.0.1:25\n",
			[]string{"10:14: mail.smarthost: 127.0.0.1 cannot be a smarthost"}},
		{"smarthost in the stack", mailTier + "mail:\n  smarthost: 10.77.0.9:25\n",
			[]string{"10:14: mail.smarthost: 10.77.0.9 is inside the stack's own subnet 10.77.0.0/24 (networks.private); name a server outside the stack"}},
		{"mail tls level", mailTier + "mail:\n  smarthost: 192.0.2.25:587\n  tls: maybe\n",
			[]string{"11:8: mail.tls: unknown TLS level \"maybe\"; use one of: may, none, encrypt, verify"}},
		{"mail password in clear", mailTier + "mail:\n  smarthost: 192.0.2.25:587\n  username: relay\n  password_file: pw\n",
			[]string{"11:13: mail.username: the relay would send the password over a connection that may not be encrypted (tls is may); set tls: encrypt or tls: verify"}},
		{"mail verify without name", mailTier + "mail:\n  smarthost: 192.0.2.25:587\n  tls: verify\n",
			[]string{"11:8: mail.tls: tls: verify needs the name to check the certificate against"}},
		{"mail login without smarthost", mailTier + "mail:\n  username: relay\n",
			[]string{"10:13: mail.username: mail.username is for the connection to a smarthost, and there is none"}},
		{"mail tier scales", "tiers:\n  edge: {}\n  app: {}\n  mail:\n    replicas: 2\n",
			[]string{"5:15: tiers.mail.replicas: a mail tier cannot have 2 replicas"}},
		{"edge turned off", "tiers:\n  edge: off\n",
			[]string{"2:9: tiers.edge: the edge tier cannot be turned off; remove \"edge: off\""}},
		{"tier neither on nor off", "tiers:\n  monitor: maybe\n",
			[]string{"2:12: tiers.monitor: expected the tier's fields, on or off, got \"maybe\"; write off to run the stack without this tier"}},
		{"turned off twice", "tiers:\n  monitor: off\n  monitor: {}\n",
			[]string{"3:3: tiers.monitor: name is used twice"}},
		{"off names no default tier", "tiers:\n  monitr: off\n",
			[]string{"2:11: tiers.monitr: the default stack has no tier \"monitr\" to turn off; turn off one of the default stack's tiers (cache, db, monitor, static, storage)"}},
		{"several at once", "name: Bad!\nnetworks:\n  private: 300.1.1.0/24\ntiers:\n  edge: {}\n  app:\n    replicas: 0\n",
			[]string{"1:7: name:", "3:12: networks.private: \"300.1.1.0\" is not an IPv4 address: 300 is not an octet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.src)
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.src)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "bulkhead.yaml:") {
					t.Errorf("error line %q does not start with file:line:column", line)
				}
			}
		})
	}
}

// mailTier is a stack with the mail tier, nine lines long.
const mailTier = "tiers:\n  edge: {}\n  static: {}\n  app: {}\n  cache: {}\n  db: {}\n  storage: {}\n  mail: {}\n"

// TestAllErrorsAtOnce: a file with three independent mistakes reports three.
func TestAllErrorsAtOnce(t *testing.T) {
	_, err := load(t, "name: Bad!\nnetworks:\n  private: 10.1.0.0/33\nflows:\n  - {from: app, to: nowhere, port: 99999}\n")
	// A value that does not decode and rules that others break are
	// reported together.
	if es := spec.AsErrors(err); len(es) != 4 {
		t.Fatalf("want 4 errors (name, private, flow to, flow port), got %d: %v", len(es), err)
	}
}

// TestDefaults: an empty file and a file with no tiers mean the default
// stack of DESIGN.md and its monitor.
func TestDefaults(t *testing.T) {
	for _, src := range []string{"", "name: shop\n", "tiers:\n"} {
		st, err := load(t, src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		want := map[string]string{"edge": "nginx", "static": "lighttpd", "app": "apache2", "cache": "memcached", "db": "mariadb", "storage": "", "monitor": "prometheus"}
		if len(st.Tiers) != len(want) {
			t.Fatalf("%q: %d tiers, want %d", src, len(st.Tiers), len(want))
		}
		for name, sw := range want {
			tier := st.Tiers[name]
			if tier == nil || tier.Software != sw || tier.Role != name {
				t.Errorf("%q: tier %s = %+v, want role %s software %q", src, name, tier, name, sw)
			}
		}
		if st.Tiers["app"].Replicas != 2 {
			t.Errorf("%q: app replicas %d, want 2", src, st.Tiers["app"].Replicas)
		}
		if st.Tiers["storage"].Protocol != spec.ProtocolAuto {
			t.Errorf("%q: storage protocol %q, want auto", src, st.Tiers["storage"].Protocol)
		}
	}
}

// TestTiersOff: "off" leaves a tier out. A file that lists no other tier
// gets the default stack without it; one that lists its tiers gets those,
// off or not, and so keeps the meaning it had before the monitor was on
// by default.
func TestTiersOff(t *testing.T) {
	tests := []struct {
		src  string
		want []string
	}{
		{"", []string{"app", "cache", "db", "edge", "monitor", "static", "storage"}},
		{"tiers:\n  monitor: off\n", []string{"app", "cache", "db", "edge", "static", "storage"}},
		{"tiers:\n  monitor: false\n  cache: off\n", []string{"app", "db", "edge", "static", "storage"}},
		{"tiers:\n  mail: off\n", []string{"app", "cache", "db", "edge", "monitor", "static", "storage"}},
		{"tiers:\n  edge: {}\n  app: {}\n", []string{"app", "edge"}},
		{"tiers:\n  edge: {}\n  app: {}\n  monitor: off\n", []string{"app", "edge"}},
		{"tiers:\n  edge: {}\n  app: {}\n  monitor: on\n", []string{"app", "edge", "monitor"}},
	}
	for _, tt := range tests {
		st, err := load(t, tt.src)
		if err != nil {
			t.Fatalf("%q: %v", tt.src, err)
		}
		var got []string
		for _, tier := range st.Ordered() {
			got = append(got, tier.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q: tiers %v, want %v", tt.src, got, tt.want)
		}
		if m := st.Tiers["monitor"]; m != nil && (m.Software != "prometheus" || m.Replicas != 1) {
			t.Errorf("%q: monitor %+v, want prometheus with defaults", tt.src, m)
		}
		if off := strings.Contains(tt.src, "monitor: off") || strings.Contains(tt.src, "monitor: false"); st.Off("monitor") != off {
			t.Errorf("%q: Off(monitor) = %v, want %v", tt.src, !off, off)
		}
	}
}

// TestStorageDefaultsGrow: left out, the storage node's memory and pids
// follow its SFTP clients; the default stack keeps the role defaults.
func TestStorageDefaultsGrow(t *testing.T) {
	for _, c := range []struct {
		src  string
		mem  spec.ByteSize
		pids int
	}{
		{"", 256 << 20, 512},
		{"tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: 100\n", 808 << 20, 512},
		{"tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: 200\n", 1608 << 20, 836},
		{"tiers:\n  edge: {}\n  storage: {protocol: nfs}\n  app:\n    replicas: 200\n", 256 << 20, 512},
	} {
		st, err := load(t, c.src)
		if err != nil {
			t.Fatalf("%q: %v", c.src, err)
		}
		if s := st.ByRole(spec.RoleStorage); s.Memory != c.mem || s.Pids != c.pids {
			t.Errorf("%q: storage memory %s pids %d, want %s and %d", c.src, s.Memory, s.Pids, c.mem, c.pids)
		}
	}
}

// TestDiskAndCPUDefaults: a tier that leaves disk and cpu out gets its
// role's values; one that writes them keeps them.
func TestDiskAndCPUDefaults(t *testing.T) {
	st, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		disk spec.ByteSize
		cpu  int
	}{
		"edge": {256 << 20, 200}, "static": {256 << 20, 100}, "app": {512 << 20, 100},
		"cache": {128 << 20, 100}, "db": {4 << 30, 200}, "storage": {4 << 30, 100},
	}
	for name, w := range want {
		if tier := st.Tiers[name]; tier.Disk != w.disk || tier.CPU != w.cpu {
			t.Errorf("tier %s: disk %s cpu %d, want %s and %d", name, tier.Disk, tier.CPU, w.disk, w.cpu)
		}
	}
	// The least each role works with is accepted, and kept as written.
	st, err = load(t, "tiers:\n  edge: {disk: 64M, cpu: 1}\n  app: {disk: 64M, cpu: 10000}\n  db: {disk: 256M}\n  storage: {disk: 128M}\n")
	if err != nil {
		t.Fatal(err)
	}
	for name, disk := range map[string]spec.ByteSize{"edge": 64 << 20, "app": 64 << 20, "db": 256 << 20, "storage": 128 << 20} {
		if got := st.Tiers[name].Disk; got != disk {
			t.Errorf("tier %s: disk %s, want %s", name, got, disk)
		}
	}
	if e, a, db := st.Tiers["edge"].CPU, st.Tiers["app"].CPU, st.Tiers["db"].CPU; e != 1 || a != 10000 || db != 200 {
		t.Errorf("cpu: edge %d app %d db %d, want 1, 10000 and the default 200", e, a, db)
	}
}

func TestNamedTiersOnly(t *testing.T) {
	st, err := load(t, "tiers:\n  edge:\n    software: haproxy\n  web:\n    role: app\n    replicas: 5\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tiers) != 2 || st.Tiers["web"].Role != "app" || st.Tiers["web"].Software != "apache2" || st.Tiers["edge"].Software != "haproxy" {
		t.Fatalf("tiers = %+v", st.Tiers)
	}
	if got := spec.InstanceNames(st.Tiers["web"]); len(got) != 5 || got[0] != "web-1" || got[4] != "web-5" {
		t.Fatalf("instances = %v", got)
	}
	if got := spec.InstanceNames(st.Tiers["edge"]); len(got) != 1 || got[0] != "edge" {
		t.Fatalf("edge instances = %v", got)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]spec.ByteSize{"512": 512, "4K": 4096, "256M": 256 << 20, "1G": 1 << 30, "1GiB": 1 << 30, "64mb": 64 << 20} {
		got, err := spec.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "1T", "1.5G"} {
		if _, err := spec.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
}

// TestCheckDisk: a stack whose disks exceed the free space names the
// tiers to lower, placed at their disk fields, with the total and the
// free space in every message.
func TestCheckDisk(t *testing.T) {
	const M = 1 << 20
	tests := []struct {
		name, src string
		free      int64
		want      []string // each error in order of the tiers named, or its start
		none      []string // must not appear
	}{
		{"default stack fits", "", 10368 * M, nil, nil},
		{"default stack, 1M short", "", 10367 * M,
			[]string{"bulkhead.yaml:1:1: tiers.db.disk: the stack needs 10368M of disk, 4G of it for db, but /var/lib/bulkhead has 10367M free; lower disk here (the least for db is 256M), or free 1M there"},
			[]string{"tiers.storage.disk", "tiers.app.disk"}},
		{"two tiers to lower", "tiers:\n  edge: {}\n  app:\n    replicas: 4\n    disk: 1G\n  db:\n    disk: 2G\n", 2 * 1024 * M,
			[]string{
				"bulkhead.yaml:5:11: tiers.app.disk: the stack needs 6400M of disk, 4G of it for 4 app nodes of 1G, but /var/lib/bulkhead has 2G free; lower disk here (the least for app is 64M), or free 4352M there",
				"bulkhead.yaml:7:11: tiers.db.disk: the stack needs 6400M of disk, 2G of it for db, but /var/lib/bulkhead has 2G free; lower disk here (the least for db is 256M), or free 4352M there",
			},
			[]string{"tiers.edge.disk"}},
		{"disk not written: placed at the tier", "tiers:\n  edge: {}\n  app: {}\n  db:\n    memory: 1G\n", 1024 * M,
			[]string{"bulkhead.yaml:5:5: tiers.db.disk: the stack needs 4864M of disk, 4G of it for db"}, nil},
		{"too little even at the least", "", 500*M + 12345,
			[]string{"bulkhead.yaml:1:1: tiers.db.disk: the stack needs 10368M of disk, 4G of it for db, but /var/lib/bulkhead has 500M free; even with every tier at its least the stack needs 832M; free 332M there"},
			[]string{"tiers.storage.disk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := load(t, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			err = st.CheckDisk(tt.free, "/var/lib/bulkhead")
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckDisk(%d) = %v, want nil", tt.free, err)
				}
				return
			}
			es := spec.AsErrors(err)
			if len(es) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tt.want), err)
			}
			for i, w := range tt.want {
				if got := es[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got, w)
				}
			}
			for _, n := range tt.none {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error names %s:\n%v", n, err)
				}
			}
		})
	}
}
