"""Image files at the library's boundary: read/write uint8 or uint16, RGB(A) or gray, HWC.

Inside the library images are float32 in [0, 1]; `to_float` / `from_float` convert. OpenCV does
the decoding (it keeps 16-bit PNG/TIFF, which Pillow reduces to 8 bits); channels are flipped to
RGB here so that nothing else sees BGR.
"""

import os
import pathlib
import cv2
import numpy as np

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # errors only: unreadable files are reported by path through ImageReadError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class ImageReadError(ValueError):
  """A file that cannot be read as an image; `path` says which."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f'{self.path}: {reason}')


def is_image_file(path: str | os.PathLike) -> bool:
  return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[str]:
  """Image files under `root` (sorted, any names), or `[root]` if it is a file."""
  root = pathlib.Path(root)
  if root.is_file():
    return [str(root)]
  if not root.is_dir():
    raise FileNotFoundError(f'{root}: no such file or folder')
  found = root.rglob('*') if recursive else root.glob('*')
  return sorted(str(p) for p in found if p.is_file() and is_image_file(p))


def decode_image(data: bytes | np.ndarray, path: str | os.PathLike = '<bytes>') -> np.ndarray:
  """Decodes encoded image bytes to HWC (C = 1, 3 or 4, RGB order), uint8 or uint16."""
  buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
  if buf.size == 0:
    raise ImageReadError(path, 'empty file')
  img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
  if img is None:
    raise ImageReadError(path, 'not a decodable image (unknown format or corrupt data)')
  if img.dtype not in (np.uint8, np.uint16):
    if img.dtype == np.float32 or img.dtype == np.float64:
      img = np.clip(img, 0, 1)
      img = np.round(img * 65535).astype(np.uint16)
    else:
      raise ImageReadError(path, f'unsupported sample type {img.dtype}')
  if img.ndim == 2:
    img = img[:, :, None]
  if img.shape[2] == 3:
    img = img[:, :, ::-1]
  elif img.shape[2] == 4:
    img = img[:, :, [2, 1, 0, 3]]
  elif img.shape[2] != 1:
    raise ImageReadError(path, f'unsupported channel count {img.shape[2]}')
  return np.ascontiguousarray(img)


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file (paths with spaces or non-ASCII names work); see `decode_image`."""
  try:
    data = np.fromfile(os.fspath(path), np.uint8)
  except OSError as e:
    raise ImageReadError(path, f'cannot read file ({e.strerror or e})') from e
  return decode_image(data, path)


def encode_image(img: np.ndarray, ext: str = '.png', png_compression: int = 3) -> bytes:
  """HWC (or HW) uint8/uint16 RGB(A)/gray -> encoded file bytes in the format of `ext`."""
  if img.dtype not in (np.uint8, np.uint16):
    raise TypeError(f'encode_image takes uint8 or uint16, got {img.dtype}; use from_float')
  if img.ndim == 3 and img.shape[2] == 3:
    img = img[:, :, ::-1]
  elif img.ndim == 3 and img.shape[2] == 4:
    img = img[:, :, [2, 1, 0, 3]]
  elif img.ndim == 3 and img.shape[2] == 1:
    img = img[:, :, 0]
  ext = ext.lower()
  params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression] if ext == '.png' else []
  ok, encoded = cv2.imencode(ext, np.ascontiguousarray(img), params)
  if not ok:
    raise ValueError(f'cannot encode a {img.dtype} image of shape {img.shape} as {ext}')
  return encoded.tobytes()


def write_image(path: str | os.PathLike, img: np.ndarray, png_compression: int = 3) -> None:
  """Writes HWC (or HW) uint8/uint16 RGB(A)/gray; the extension picks the format."""
  path = os.fspath(path)
  ext = os.path.splitext(path)[1] or '.png'
  try:
    data = encode_image(img, ext, png_compression)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def max_value(dtype: np.dtype) -> float:
  return 65535.0 if np.dtype(dtype) == np.uint16 else 255.0


def to_float(img: np.ndarray) -> np.ndarray:
  """uint8/uint16 -> float32 in [0, 1]."""
  return img.astype(np.float32) / max_value(img.dtype)


def from_float(x: np.ndarray, dtype: np.dtype = np.uint8) -> np.ndarray:
  """float in [0, 1] -> uint8/uint16, clipped and rounded half to even (as torch.round)."""
  m = max_value(dtype)
  return np.clip(np.round(np.asarray(x, np.float32) * m), 0, m).astype(dtype)


def to_rgb(img: np.ndarray) -> np.ndarray:
  """HWC with 1, 3 or 4 channels -> 3-channel RGB (gray replicated, alpha dropped)."""
  if img.shape[2] == 1:
    return np.repeat(img, 3, axis=2)
  return img[:, :, :3]

