"""The top wing: what runs jobs and reports together (`earlyphase study`, `earlyphase sweep run`) and the command
table. It imports the jobs and the reporting; nothing below imports it."""
