//! Order events as a shop's topic holds them, for benchmarks whose figures depend on how the
//! payload compresses: every record different (an order ID with 128 random bits, a customer drawn
//! from 50,000, 2 to 7 lines drawn from 20,000 products, amounts, codes, a free-text note), in
//! JSON (~0.9 KiB) or as the same order in Avro binary under [`SCHEMA`]. Deterministic: the same
//! seed gives the same records. zstd -3 compresses the JSON about 3× at ~250 MB/s a core, where
//! the repetitive records of `produce_records` compress 7× at 600 MB/s and more.

/// The Avro schema of [`Order::avro`].
pub const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"kar.bench","fields":[
{"name":"order_id","type":"string"},
{"name":"created_at","type":{"type":"long","logicalType":"timestamp-millis"}},
{"name":"status","type":{"type":"enum","name":"Status","symbols":["PLACED","PAID","SHIPPED","DELIVERED","CANCELLED"]}},
{"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"},{"name":"email","type":"string"},{"name":"phone","type":"string"}]}},
{"name":"shipping","type":{"type":"record","name":"Address","fields":[{"name":"street","type":"string"},{"name":"city","type":"string"},{"name":"postcode","type":"string"},{"name":"country","type":"string"}]}},
{"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"sku","type":"string"},{"name":"title","type":"string"},{"name":"qty","type":"int"},{"name":"unit_price","type":"double"}]}}},
{"name":"total","type":"double"},
{"name":"currency","type":"string"},
{"name":"payment","type":{"type":"record","name":"Payment","fields":[{"name":"method","type":"string"},{"name":"card_last4","type":"string"},{"name":"auth_code","type":"string"}]}},
{"name":"tracking","type":["null","string"]},
{"name":"note","type":"string"}]}"#;

const STATUS: [&str; 5] = ["PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"];
const FIRST: [&str; 24] = [
    "Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kamala", "Luca", "Maya", "Nils", "Olga", "Pedro", "Qiu", "Rosa", "Samir", "Tove", "Umar",
    "Vera", "Wen", "Yusuf",
];
const LAST: [&str; 24] = [
    "Albers",
    "Brandt",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Horvat",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Oliveira",
    "Petrov",
    "Quist",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Urban",
    "Virtanen",
    "Weber",
    "Zielinski",
];
const STREET: [&str; 16] = [
    "Hauptstraße",
    "Rue de la Paix",
    "Calle Mayor",
    "Via Roma",
    "Kungsgatan",
    "High Street",
    "Mill Lane",
    "Ringvej",
    "Nowy Świat",
    "Avenida da Liberdade",
    "Church Road",
    "Lindenallee",
    "Station Road",
    "Bahnhofstraße",
    "Rue Victor Hugo",
    "Park Avenue",
];
const CITY: [(&str, &str); 12] = [
    ("Berlin", "DE"),
    ("Lyon", "FR"),
    ("Madrid", "ES"),
    ("Torino", "IT"),
    ("Uppsala", "SE"),
    ("Leeds", "GB"),
    ("Aarhus", "DK"),
    ("Kraków", "PL"),
    ("Porto", "PT"),
    ("Graz", "AT"),
    ("Utrecht", "NL"),
    ("Tampere", "FI"),
];
const ADJ: [&str; 20] = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Ergonomic",
    "Foldable",
    "Heavy-duty",
    "Insulated",
    "Lightweight",
    "Modular",
    "Organic",
    "Portable",
    "Premium",
    "Recycled",
    "Rugged",
    "Smart",
    "Stainless",
    "Vintage",
    "Waterproof",
    "Wireless",
];
const NOUN: [&str; 20] = [
    "backpack",
    "bike lamp",
    "blender",
    "desk chair",
    "drill",
    "espresso cup",
    "headphones",
    "hiking boots",
    "kettle",
    "keyboard",
    "lamp",
    "monitor arm",
    "notebook",
    "pan",
    "rain jacket",
    "router",
    "scarf",
    "teapot",
    "tent",
    "water bottle",
];
const WORDS: [&str; 32] = [
    "please",
    "leave",
    "the",
    "parcel",
    "at",
    "door",
    "with",
    "neighbour",
    "gift",
    "wrap",
    "no",
    "invoice",
    "in",
    "box",
    "call",
    "before",
    "delivery",
    "back",
    "entrance",
    "ring",
    "twice",
    "office",
    "hours",
    "only",
    "fragile",
    "handle",
    "care",
    "birthday",
    "present",
    "for",
    "my",
    "sister",
];
const PAYMENT: [&str; 4] = ["card", "paypal", "klarna", "bank_transfer"];

/// A small, fast, deterministic generator (xorshift64*); the records need variety, not secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

pub struct Line {
    sku: String,
    title: String,
    qty: i32,
    unit_price: f64,
}

pub struct Order {
    pub order_id: String,
    created_at: i64,
    status: usize,
    pub customer_id: String,
    name: String,
    email: String,
    phone: String,
    street: String,
    city: &'static str,
    postcode: String,
    country: &'static str,
    lines: Vec<Line>,
    total: f64,
    method: &'static str,
    card_last4: String,
    auth_code: String,
    tracking: Option<String>,
    note: String,
}

impl Order {
    /// The `i`th order of a run (timestamps advance ~40 ms an order from 2026-11-01).
    pub fn new(rng: &mut Rng, i: u64) -> Order {
        let customer = rng.below(50_000);
        let (first, last) = (
            FIRST[(customer % 24) as usize],
            LAST[(customer / 24 % 24) as usize],
        );
        let (city, country) = CITY[(customer % 12) as usize];
        let mut lines = Vec::new();
        for _ in 0..2 + rng.below(6) {
            let product = rng.below(20_000);
            lines.push(Line {
                sku: format!(
                    "SKU-{:06}-{}",
                    product,
                    (b'A' + (product % 26) as u8) as char
                ),
                title: format!(
                    "{} {} {}",
                    ADJ[(product % 20) as usize],
                    NOUN[(product / 20 % 20) as usize],
                    ["S", "M", "L", "XL", "one size"][(product % 5) as usize]
                ),
                qty: 1 + rng.below(4) as i32,
                unit_price: (99 + product % 40_000) as f64 / 100.0,
            });
        }
        let total = lines
            .iter()
            .map(|l| l.qty as f64 * l.unit_price)
            .sum::<f64>();
        let status = rng.below(5) as usize;
        let words = rng.below(14) as usize;
        let note = (0..words)
            .map(|_| rng.pick(&WORDS))
            .collect::<Vec<_>>()
            .join(" ");
        Order {
            order_id: format!("{:016x}{:016x}", rng.next(), rng.next()),
            created_at: 1_793_491_200_000 + i as i64 * 40 + rng.below(40) as i64,
            status,
            customer_id: format!("cust-{customer:07}"),
            name: format!("{first} {last}"),
            email: format!(
                "{}.{}{}@example.{}",
                first.to_lowercase(),
                last.to_lowercase(),
                customer % 100,
                country.to_lowercase()
            ),
            phone: format!(
                "+{} {:03} {:07}",
                30 + customer % 19,
                customer % 1000,
                rng.below(10_000_000)
            ),
            street: format!(
                "{} {}",
                STREET[(customer % 16) as usize],
                1 + customer % 180
            ),
            city,
            postcode: format!("{:05}", customer * 7 % 100_000),
            country,
            lines,
            total: (total * 100.0).round() / 100.0,
            method: rng.pick(&PAYMENT),
            card_last4: format!("{:04}", rng.below(10_000)),
            auth_code: format!("{:012X}", rng.next() >> 16),
            tracking: (status >= 2).then(|| format!("1Z{:016X}", rng.next())),
            note,
        }
    }

    /// The order as one line of JSON (no tab, no newline: kcat and ProducerPerformance read
    /// records from lines).
    pub fn json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            r#"{{"order_id":"{}","created_at":{},"status":"{}","customer":{{"id":"{}","name":"{}","email":"{}","phone":"{}"}},"shipping":{{"street":"{}","city":"{}","postcode":"{}","country":"{}"}},"lines":["#,
            self.order_id,
            self.created_at,
            STATUS[self.status],
            self.customer_id,
            self.name,
            self.email,
            self.phone,
            self.street,
            self.city,
            self.postcode,
            self.country
        );
        for (n, l) in self.lines.iter().enumerate() {
            let _ = write!(
                out,
                r#"{}{{"sku":"{}","title":"{}","qty":{},"unit_price":{:.2}}}"#,
                if n > 0 { "," } else { "" },
                l.sku,
                l.title,
                l.qty,
                l.unit_price
            );
        }
        let _ = write!(
            out,
            r#"],"total":{:.2},"currency":"EUR","payment":{{"method":"{}","card_last4":"{}","auth_code":"{}"}},"tracking":{},"note":"{}"}}"#,
            self.total,
            self.method,
            self.card_last4,
            self.auth_code,
            self.tracking
                .as_ref()
                .map_or("null".to_string(), |t| format!("\"{t}\"")),
            self.note
        );
    }

    /// The order in Avro's binary encoding under [`SCHEMA`].
    pub fn avro(&self, out: &mut Vec<u8>) {
        let s = |out: &mut Vec<u8>, v: &str| {
            long(out, v.len() as i64);
            out.extend_from_slice(v.as_bytes());
        };
        s(out, &self.order_id);
        long(out, self.created_at);
        long(out, self.status as i64);
        for v in [&self.customer_id, &self.name, &self.email, &self.phone] {
            s(out, v);
        }
        for v in [&self.street, self.city, &self.postcode, self.country] {
            s(out, v);
        }
        long(out, self.lines.len() as i64);
        for l in &self.lines {
            s(out, &l.sku);
            s(out, &l.title);
            long(out, l.qty as i64);
            out.extend_from_slice(&l.unit_price.to_le_bytes());
        }
        long(out, 0);
        out.extend_from_slice(&self.total.to_le_bytes());
        s(out, "EUR");
        for v in [self.method, &self.card_last4, &self.auth_code] {
            s(out, v);
        }
        match &self.tracking {
            None => long(out, 0),
            Some(t) => {
                long(out, 1);
                s(out, t);
            }
        }
        s(out, &self.note);
    }
}

/// Avro's zig-zag varint.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push(z as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}
