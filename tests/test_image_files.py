"""gpt4image_mm/utils/image_files.py: one extension list for both folder walks."""
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from gpt4image_mm.captioning.prompts import image_prompts
from gpt4image_mm.captioning.sources import plan_from_images
from gpt4image_mm.utils.image_files import (
    IMAGE_EXTENSIONS,
    image_folder_keys,
    list_images,
)


def test_the_list_is_torchvisions():
    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS


def test_caption_and_import_take_the_same_files(tmp_path):
    """caption.py --images listed .gif files, which ImageFolder (and so the
    official-embedding importer and training) skips: a GIF got a description
    no sample used."""
    for name in ('cat/1.png', 'cat/2.GIF', 'dog/3.JPG', 'dog/4.gif',
                 'dog/5.txt'):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        Image.new('RGB', (4, 4)).save(path, format='PNG')
    caption = sorted(str(p.relative_to(tmp_path))
                     for p in map(type(tmp_path), list_images(str(tmp_path))))
    assert caption == sorted(image_folder_keys(str(tmp_path))) == [
        'cat/1.png', 'dog/3.JPG']
    plan = plan_from_images(str(tmp_path), image_prompts())
    assert sorted(plan.keys) == caption
