"""The command-line tools: ``gpt4image COMMAND`` (:mod:`.main`) and one
module per command. A command module builds its parser without importing
torch, MMEngine or mmpretrain; the work it calls imports them where needed.
``tools/*.py`` are thin scripts over these modules."""
