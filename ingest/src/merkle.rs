//! The winners' Merkle tree of the public report: one root over the ordered
//! winners' receipts, and the path that proves one receipt is in it.
//!
//! The tree is RFC 9162's (Certificate Transparency v2, §2.1) with SHA-256,
//! chosen because it is specified to the byte and checkers exist in many
//! languages: a leaf is `SHA-256(0x00 || canonical receipt bytes)`, a node
//! `SHA-256(0x01 || left || right)`, a tree of n > 1 leaves splits at the
//! largest power of two below n, and the empty tree's root is SHA-256 of
//! nothing. The leaves are the winners' receipts' canonical bytes
//! (`crate::receipts`), not their signatures, so the report is built from
//! the database alone and a member's receipt, signature aside, is the leaf.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root over `leaves` (already leaf hashes), RFC 9162's MTH.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` (RFC 9162's PATH), leaf to root.
pub fn path(leaves: &[Hash], index: usize) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || index >= n {
        return Vec::new();
    }
    let k = split(n);
    let (mut below, sibling) = if index < k {
        (path(&leaves[..k], index), root(&leaves[k..]))
    } else {
        (path(&leaves[k..], index - k), root(&leaves[..k]))
    };
    below.push(sibling);
    below
}

/// Whether `leaf` is leaf `index` of the `size`-leaf tree whose root is
/// `root`, by `path` (RFC 9162 §2.1.3.2).
pub fn verify(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// A receipt's inclusion proof as the report serves it and
/// `firstcome receipt verify --proof` reads it (hashes in lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub event_id: String,
    pub entry_id: String,
    /// The receipt's place among the winners (by ticket, accept time, entry id), from 0.
    pub leaf_index: u64,
    /// Winners in the tree.
    pub tree_size: u64,
    pub leaf: String,
    pub path: Vec<String>,
    pub root: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("proof field {0} is not a 32-byte hex hash")]
    Hash(&'static str),
    #[error("the proof's leaf is not the receipt's (another entry, or altered facts)")]
    OtherLeaf,
    #[error("the path does not lead from the leaf to the root")]
    Path,
    #[error("the proof's root {proof} is not the published root {published}")]
    Root { proof: String, published: String },
}

fn hash_of(text: &str, field: &'static str) -> Result<Hash, ProofError> {
    let bytes = hex::decode(text).map_err(|_| ProofError::Hash(field))?;
    bytes.try_into().map_err(|_| ProofError::Hash(field))
}

impl Proof {
    /// Checks that `receipt_bytes` (a receipt's canonical bytes) is this
    /// proof's leaf and that the path leads to the root; with `published`,
    /// also that the root is that one (the report's).
    pub fn check(&self, receipt_bytes: &[u8], published: Option<&str>) -> Result<(), ProofError> {
        let leaf = hash_of(&self.leaf, "leaf")?;
        if leaf_hash(receipt_bytes) != leaf {
            return Err(ProofError::OtherLeaf);
        }
        let path = self.path.iter().map(|h| hash_of(h, "path")).collect::<Result<Vec<_>, _>>()?;
        let root = hash_of(&self.root, "root")?;
        if !verify(&leaf, self.leaf_index, self.tree_size, &path, &root) {
            return Err(ProofError::Path);
        }
        match published {
            Some(published) if !published.eq_ignore_ascii_case(&self.root) => {
                Err(ProofError::Root { proof: self.root.clone(), published: published.to_string() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("receipt {i}").as_bytes())).collect()
    }

    #[test]
    fn every_leaf_of_every_small_tree_proves_its_inclusion() {
        for n in 1..=33 {
            let leaves = leaves(n);
            let root = root(&leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                let path = path(&leaves, i);
                assert!(verify(leaf, i as u64, n as u64, &path, &root), "leaf {i} of {n}");
            }
        }
    }

    #[test]
    fn a_proof_fails_for_another_leaf_place_size_or_root() {
        let leaves = leaves(13);
        let root = root(&leaves);
        let path = path(&leaves, 5);
        assert!(!verify(&leaves[6], 5, 13, &path, &root), "another leaf");
        assert!(!verify(&leaves[5], 4, 13, &path, &root), "another place");
        // (a size with the same path shape is not told apart by the path:
        // the report publishes the size beside the root)
        assert!(!verify(&leaves[5], 5, 17, &path, &root), "another size");
        assert!(!verify(&leaves[5], 5, 13, &path, &leaf_hash(b"x")), "another root");
        assert!(!verify(&leaves[5], 5, 13, &path[1..], &root), "a shortened path");
    }

    #[test]
    fn the_root_follows_rfc_9162() {
        // Two leaves: the node of their leaf hashes; three: the first two's
        // node beside the third leaf (split at the largest power of two below n).
        let l = leaves(3);
        assert_eq!(root(&l[..2]), node_hash(&l[0], &l[1]));
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        // The empty tree's root is SHA-256 of nothing.
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn a_served_proof_checks_against_the_receipt_and_the_published_root() {
        let bytes: Vec<Vec<u8>> = (0..5).map(|i| format!("receipt {i}").into_bytes()).collect();
        let leaves: Vec<Hash> = bytes.iter().map(|b| leaf_hash(b)).collect();
        let root_hex = hex::encode(root(&leaves));
        let proof = Proof {
            event_id: "ev".into(),
            entry_id: "e".into(),
            leaf_index: 3,
            tree_size: 5,
            leaf: hex::encode(leaves[3]),
            path: path(&leaves, 3).iter().map(hex::encode).collect(),
            root: root_hex.clone(),
        };
        proof.check(&bytes[3], Some(&root_hex)).unwrap();
        assert!(matches!(proof.check(&bytes[2], None), Err(ProofError::OtherLeaf)));
        assert!(matches!(proof.check(&bytes[3], Some(&"0".repeat(64))), Err(ProofError::Root { .. })));
    }
}
